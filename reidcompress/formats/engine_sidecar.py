"""The JSON sidecar beside every TensorRT engine, and the TensorRT/GPU it must match.

An engine only runs on the TensorRT version and GPU architecture it was built for, so export writes
``model.engine.json`` with both (plus precision, batch profile and provenance), and the runtime
refuses a mismatch with one clear error instead of TensorRT's deserialisation failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reidcompress._io import require_file
from reidcompress.errors import BackendUnavailableError, CheckpointError

__all__ = [
    "INSTALL_HINT",
    "REQUIRED_KEYS",
    "sidecar_path",
    "read_sidecar",
    "check_engine_compatible",
    "require_tensorrt",
    "runtime_info",
]

INSTALL_HINT = (
    "install TensorRT 10 or 11 (x86: pip install 'reidcompress[trt]' on a machine with an NVIDIA GPU; "
    "Jetson: JetPack 6.1+'s python3-libnvinfer, as docker/Dockerfile.jetson does)"
)
REQUIRED_KEYS = frozenset({"tensorrt_version", "compute_capability", "input_size"})


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    return Path(f"{engine}.json")


def read_sidecar(engine: str | os.PathLike[str]) -> dict[str, Any]:
    p = sidecar_path(require_file(engine, "TensorRT engine"))
    if not p.exists():
        raise CheckpointError(
            f"{engine}: no sidecar {p.name}: reidcompress only runs engines it built, whose TensorRT version "
            "and GPU are recorded; rebuild it with `reidcompress export --trt`"
        )
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p}: unreadable engine sidecar ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p}: an engine sidecar is a JSON object")
    missing = REQUIRED_KEYS - set(data)
    if missing:
        raise CheckpointError(f"{p}: engine sidecar lacks {sorted(missing)}")
    return data


def check_engine_compatible(sidecar: dict[str, Any], runtime: dict[str, str]) -> None:
    """Refuse an engine built with another TensorRT version or for another GPU architecture."""
    built, here = sidecar["tensorrt_version"], runtime["tensorrt_version"]
    if built != here:
        raise CheckpointError(
            f"engine built with TensorRT {built}, this machine has TensorRT {here}: engines are not portable "
            "across TensorRT versions; rebuild it here with `reidcompress export --trt`"
        )
    if sidecar["compute_capability"] != runtime["compute_capability"]:
        raise CheckpointError(
            f"engine built for compute capability {sidecar['compute_capability']} ({sidecar.get('gpu_name', '?')}), "
            f"this GPU is {runtime['compute_capability']} ({runtime['gpu_name']}); rebuild it on this device"
        )


def require_tensorrt() -> None:
    """Raise BackendUnavailableError unless the real TensorRT is importable.

    Call sites then ``import tensorrt as trt`` themselves, so mypy checks their use of the API
    against tensorrt-stubs. ``tensorrt-stubs`` installs an empty ``tensorrt`` namespace package, so
    a successful import is not enough: the module must have a Builder.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(f"TensorRT is not installed; {INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):
        raise BackendUnavailableError(f"TensorRT is not installed (only type stubs were found); {INSTALL_HINT}")


def _gpu() -> tuple[str, str]:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs an NVIDIA GPU, and none is visible here")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def runtime_info() -> dict[str, str]:
    """The running TensorRT version and GPU: what a sidecar must match."""
    require_tensorrt()
    import tensorrt as trt

    name, capability = _gpu()
    return {"tensorrt_version": str(trt.__version__), "gpu_name": name, "compute_capability": capability}
