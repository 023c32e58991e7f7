"""TensorRT engines from exported ONNX models, built with NVIDIA Polygraphy and the TensorRT API.

An engine only runs on the TensorRT version and GPU it was built for, so every engine gets a JSON
sidecar (``model.engine.json``) with both, its precision and batch profile, and the hash of the
checkpoint it came from; loading refuses a mismatch with one clear error. TensorRT is imported
lazily: without it (or without an NVIDIA GPU) the build raises BackendUnavailableError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import atomic_path, atomic_write_text, require_file
from reidcompress.errors import BackendUnavailableError, CheckpointError, InputError
from reidcompress.export._input import INPUT_FORMAT_KEY, graph_input

__all__ = [
    "PRECISIONS",
    "EngineSpec",
    "require_tensorrt",
    "runtime_info",
    "build_engine",
    "sidecar_path",
    "read_sidecar",
    "check_engine_compatible",
]

PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = (
    "install TensorRT (x86: pip install 'reidcompress[trt]' on a machine with an NVIDIA GPU; "
    "Jetson: JetPack's python3-libnvinfer, as docker/Dockerfile.jetson does)"
)


@dataclass(frozen=True)
class EngineSpec:
    """What to build: precision and the batch range of the optimisation profile."""

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int = 2048

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            got = f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            raise InputError(f"need 1 <= min-batch <= opt-batch <= max-batch, got {got}")
        if self.workspace_mib < 16:
            raise InputError(f"workspace must be at least 16 MiB, got {self.workspace_mib}")


def require_tensorrt() -> None:
    """Raise BackendUnavailableError unless the real TensorRT is importable.

    Call sites then ``import tensorrt as trt`` themselves, so mypy checks their use of the API
    against tensorrt-stubs.

    ``tensorrt-stubs`` installs an empty ``tensorrt`` namespace package, so a successful import is
    not enough: the module must have a Builder.
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
    missing = {"tensorrt_version", "compute_capability", "input_size"} - set(data)
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


def _feeds(batches: Iterable[np.ndarray], meta: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: [0, 1] images as the graph takes them (``export --input``)."""
    from reidcompress.export.onnx import INPUT

    for b in batches:
        yield {INPUT: np.ascontiguousarray(graph_input(b, meta), dtype=np.float32)}


def _config(spec: EngineSpec, shape: tuple[int, ...], calibrator: Any, timing_cache: Path) -> Any:
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, Profile

    from reidcompress.export.onnx import INPUT

    h, w = shape
    profile = Profile().add(
        INPUT, min=(spec.min_batch, 3, h, w), opt=(spec.opt_batch, 3, h, w), max=(spec.max_batch, 3, h, w)
    )
    return CreateConfig(
        fp16=spec.precision in ("fp16", "int8"),  # int8 layers without a scale fall back to fp16, not fp32
        int8=spec.precision == "int8",
        calibrator=calibrator,
        profiles=[profile],
        load_timing_cache=str(timing_cache) if timing_cache.exists() else None,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: spec.workspace_mib << 20},
    )


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    spec: EngineSpec,
    *,
    calib_batches: Iterable[np.ndarray] | None = None,
    calib_cache: str | os.PathLike[str] | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Build a serialized engine and its sidecar; returns the sidecar.

    INT8 uses entropy calibration (``IInt8EntropyCalibrator2``) over ``calib_batches``; an existing
    ``calib_cache`` is reused instead of recalibrating. The timing cache is loaded when present and
    saved after the build, so rebuilds on the same device are fast.
    """
    from polygraphy.backend.trt import Calibrator, EngineBytesFromNetwork, NetworkFromOnnxPath

    from reidcompress.export.onnx import read_metadata

    meta = read_metadata(onnx_path)
    shape = tuple(meta["input_size"])
    cache = Path(calib_cache) if calib_cache else Path(f"{engine_path}.calib")
    if spec.precision == "int8" and calib_batches is None and not cache.exists():
        raise InputError("INT8 needs calibration images (--calib-data DIR) or an existing calibration cache")
    info = runtime_info()
    import tensorrt as trt

    calibrator = None
    if spec.precision == "int8":
        calibrator = Calibrator(
            _feeds(calib_batches or [], meta), cache=str(cache), BaseClass=trt.IInt8EntropyCalibrator2
        )
    tcache = Path(timing_cache) if timing_cache else Path(engine_path).with_suffix(".timing.cache")
    config = _config(spec, shape, calibrator, tcache)
    serialized = EngineBytesFromNetwork(
        NetworkFromOnnxPath(str(onnx_path)), config=config, save_timing_cache=str(tcache)
    )()
    sidecar = {
        **info,
        **asdict(spec),
        "input_size": list(shape),
        "onnx": Path(onnx_path).name,
        "source_sha256": meta.get("source_sha256"),
        "embedding_dim": int(meta.get("embedding_dim", 0)),
        "flops": int(meta.get("flops", 0)),
        "params": int(meta.get("params", 0)),
        "arch": meta.get("arch"),
        # The TensorRT backend feeds the engine what its ONNX graph takes.
        INPUT_FORMAT_KEY: meta.get(INPUT_FORMAT_KEY, "unit"),
        "mean": meta.get("mean"),
        "std": meta.get("std"),
        "calibration_cache": str(cache) if spec.precision == "int8" else None,
    }
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    atomic_write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2))
    return sidecar
