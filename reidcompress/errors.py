"""Exception hierarchy.

Library code raises these; only the CLI turns them into one line on stderr and an exit code:
2 for most, 1 for ExportError (`cli/_common.py` EXIT_CODES, the one place that maps them).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ReidCompressError",
    "InputError",
    "CheckpointError",
    "ArchitectureError",
    "DatasetError",
    "MethodError",
    "BackendUnavailableError",
    "EngineBuildError",
    "ExportError",
]


class ReidCompressError(Exception):
    """Base class of every error the CLI reports as bad input (exit code 2)."""

    # What the failing call had finished and written (an object with ``to_dict()``), for ``--json``.
    report: Any = None


class InputError(ReidCompressError, ValueError):
    """A user-supplied value or path is unusable (missing file, rate out of range...)."""


class CheckpointError(ReidCompressError):
    """A file is not a loadable reidcompress (or importable) checkpoint."""


class ArchitectureError(ReidCompressError):
    """Weights do not fit the requested architecture, or the architecture is unknown."""


class DatasetError(ReidCompressError):
    """A dataset folder does not have the expected layout or is empty."""


class MethodError(ReidCompressError, ValueError):
    """Unknown pruning method, or a method used without what it needs."""


class BackendUnavailableError(ReidCompressError):
    """An inference backend (TensorRT, CUDA, an ONNX Runtime provider) is not available here."""


class EngineBuildError(ReidCompressError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


class ExportError(ReidCompressError):
    """An exported model does not reproduce its reference (PyTorch, or the fp32 ONNX model)."""
