"""Multi-process training under ``torchrun``: process-group set-up and rank-0 helpers.

``torchrun --nproc-per-node N`` exports RANK, LOCAL_RANK and WORLD_SIZE; without them the run is
a single process and every helper degrades to a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from reidcompress.errors import BackendUnavailableError, InputError

__all__ = [
    "DistContext",
    "init_distributed",
    "current_context",
    "shutdown_distributed",
    "resolve_device",
    "barrier",
    "all_gather_objects",
    "broadcast_object",
    "reduce_mean",
]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; under torchrun each process takes the GPU of its local rank."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendUnavailableError("CUDA was requested but no CUDA device is available")
        return torch.device("cuda", local_rank) if device == "cuda" else torch.device(device)
    if device != "cpu":
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU), or describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, dev)


def current_context(device: str | torch.device = "auto") -> DistContext:
    """The context of an already joined process group (or a single process), without joining one."""
    dev = device if isinstance(device, torch.device) else None
    if not _active():
        return DistContext(device=dev or resolve_device(str(device)))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistContext(
        dist.get_rank(), dist.get_world_size(), local_rank, dev or resolve_device(str(device), local_rank)
    )


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar logs over the ranks."""
    if not _active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))
