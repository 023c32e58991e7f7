"""Where a measurement was taken: device, backends and their versions."""

from __future__ import annotations

import os
import platform
from typing import Any

__all__ = ["environment", "cpu_name"]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def environment(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    import onnxruntime
    import torch

    from reidcompress import __version__

    env: dict[str, Any] = {
        "reidcompress": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_flags": _cpu_flags(),
        "cpu_cores": os.cpu_count(),
        "threads": threads if threads else torch.get_num_threads(),
        "device": device,
        "torch": str(torch.__version__),
        "onnxruntime": onnxruntime.__version__,
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    try:
        import tensorrt

        if hasattr(tensorrt, "Builder"):
            env["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return env
