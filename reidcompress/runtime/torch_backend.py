"""PyTorch checkpoints on CPU or CUDA, in fp32 or fp16."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidcompress.errors import BackendUnavailableError, InputError
from reidcompress.models.checkpoint import load_model
from reidcompress.models.reid import ReIDNet
from reidcompress.runtime.base import Embedder, register_backend

__all__ = ["TorchEmbedder", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError("CUDA was requested but no CUDA GPU is available here")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None


class TorchEmbedder(Embedder):
    backend = "torch"

    def __init__(self, model: ReIDNet, device: str = "cpu", fp16: bool = False, name: str = "model") -> None:
        dev = resolve_device(device)
        if fp16 and dev.type != "cuda":
            raise InputError("fp16 PyTorch inference needs a CUDA device")
        self.model = model.to(dev).eval()
        if fp16:
            self.model.half()
        self.dtype = torch.float16 if fp16 else torch.float32
        self.torch_device = dev
        self.device = str(dev)
        self.name = name
        self.input_size = tuple(model.config.input_size)  # type: ignore[assignment]
        self.metadata: dict[str, Any] = {"pruning": model.pruning, "config": model.config.to_dict()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": "fp16" if self.dtype == torch.float16 else "fp32"}

    @torch.inference_mode()
    def embed(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.torch_device, self.dtype)
        return self.model(x).float().cpu().numpy()

    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.torch_device, self.dtype)).float()


TORCH_SUFFIXES = (".pt", ".pth", ".safetensors")


@register_backend(*TORCH_SUFFIXES)
def _open_checkpoint(path: Path, device: str = "cpu", fp16: bool = False, **_: Any) -> TorchEmbedder:
    return TorchEmbedder(load_model(path), device=device, fp16=fp16, name=path.name)
