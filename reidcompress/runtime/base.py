"""The backend-neutral embedder interface and the file-suffix registry that picks a backend."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import require_file
from reidcompress.errors import InputError

__all__ = ["Embedder", "register_backend", "load_embedder", "BACKENDS"]


class Embedder(abc.ABC):
    """A loaded model that maps images to embeddings.

    ``embed`` takes float32 RGB images in [0, 1], shape (N, 3, H, W) at ``input_size``, and returns
    float32 embeddings (N, D). Normalisation is part of the model, so every backend gets the same
    input.
    """

    name: str = "model"
    backend: str = "unknown"
    device: str = "cpu"
    input_size: tuple[int, int] = (256, 128)
    metadata: dict[str, Any]
    source_path: Path | None = None

    @abc.abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "device": self.device, "input_size": list(self.input_size)}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources."""

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BACKENDS: dict[str, Callable[..., Embedder]] = {}


def register_backend(*suffixes: str) -> Callable[[Callable[..., Embedder]], Callable[..., Embedder]]:
    def deco(factory: Callable[..., Embedder]) -> Callable[..., Embedder]:
        for s in suffixes:
            if s in BACKENDS:
                raise ValueError(f"a backend is already registered for {s!r}")
            BACKENDS[s] = factory
        return factory

    return deco


def load_embedder(path: str | os.PathLike[str], device: str = "cpu", **options: Any) -> Embedder:
    """Open ``path`` with the backend its suffix names (``.pt``, ``.onnx``, ``.engine``...)."""
    p = require_file(path, "model")
    factory = BACKENDS.get(p.suffix.lower())
    if factory is None:
        raise InputError(f"{p}: unknown model file type {p.suffix!r}; expected one of {', '.join(sorted(BACKENDS))}")
    embedder = factory(Path(p), device=device, **options)
    embedder.source_path = Path(p)
    return embedder
