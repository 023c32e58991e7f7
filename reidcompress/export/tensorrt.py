"""TensorRT engines from exported ONNX models: one explicit-precision build for TensorRT 10.x and 11.x.

The precision lives in the ONNX model, not in builder flags: an fp32 model builds an fp32 engine,
the FP16 model of ``export.fp16`` an FP16 one, the symmetric int8 Q/DQ model of
``quantize_onnx(fmt="trt")`` an INT8 one. The network is parsed strongly typed (TensorRT 10's
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11.x is always strongly typed), and no FP16/INT8
builder flag or calibrator is touched: TensorRT 11 removed them (REFERENCE.md section 9), and 10.x
deprecated the calibrators in favour of Q/DQ models. Which path the installed TensorRT takes is decided
by what its bindings offer, not by its version string. A TensorRT with neither strong typing nor the
end of weak typing (8.x: JetPack 6.0's 8.6) is refused: reidcompress keeps no implicit-calibration
fallback.

Every engine gets a JSON sidecar (``formats.engine_sidecar``) with the TensorRT version and GPU it
was built for. The engine and its sidecar appear together or not at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from reidcompress._io import atomic_path, require_file
from reidcompress.errors import BackendUnavailableError, EngineBuildError, InputError, ReidCompressError
from reidcompress.formats.engine_sidecar import runtime_info, sidecar_path
from reidcompress.formats.input_format import INPUT_FORMAT_KEY
from reidcompress.formats.onnx_metadata import INPUT, read_metadata

if TYPE_CHECKING:  # tools/typecheck_tensorrt.py checks the calls against tensorrt-stubs
    import tensorrt as trt

__all__ = [
    "PRECISIONS",
    "EngineSpec",
    "EngineResult",
    "TensorRTFeatures",
    "tensorrt_features",
    "network_flags",
    "check_tensorrt",
    "model_precision",
    "build_engine",
]

PRECISIONS = ("fp32", "fp16", "int8")
# What the build calls on the module and on a Builder; present in 10.x and 11.x alike.
REQUIRED_API = ("Builder", "Logger", "OnnxParser", "MemoryPoolType", "NetworkDefinitionCreationFlag", "nptype")
REQUIRED_BUILDER_API = (
    "create_network",
    "create_builder_config",
    "create_optimization_profile",
    "build_serialized_network",
)
Q_DQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class EngineSpec:
    """The optimisation profile's batch range and the builder workspace; precision comes from the model."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int = 2048

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            got = f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            raise InputError(f"need 1 <= min batch <= opt batch <= max batch, got {got}")
        if self.workspace_mib < 16:
            raise InputError(f"the builder workspace must be at least 16 MiB, got {self.workspace_mib}")


@dataclass(frozen=True)
class EngineResult:
    path: Path
    sidecar: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.sidecar}

    def summary(self) -> str:
        s = self.sidecar
        return (
            f"wrote {self.path} (TensorRT {s['tensorrt_version']}, {s['precision']}, "
            f"batch {s['min_batch']}-{s['max_batch']}, {s['gpu_name']})"
        )


@dataclass(frozen=True)
class TensorRTFeatures:
    """What the installed bindings offer, as far as the explicit-precision build cares."""

    version: str
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED: 9.x-11.x (a no-op in 11.x)
    weak_typing: bool  # BuilderFlag.FP16/INT8 and the INT8 calibrators: up to 10.x, removed in 11.x

    @property
    def explicit_precision(self) -> bool:
        return self.strongly_typed_flag or not self.weak_typing


def tensorrt_features(trt: Any) -> TensorRTFeatures:
    flag_enum = getattr(trt, "NetworkDefinitionCreationFlag", None)
    builder_flags = getattr(trt, "BuilderFlag", None)
    return TensorRTFeatures(
        version=str(getattr(trt, "__version__", "?")),
        strongly_typed_flag=hasattr(flag_enum, "STRONGLY_TYPED"),
        weak_typing=hasattr(builder_flags, "FP16") or hasattr(trt, "IInt8EntropyCalibrator2"),
    )


def network_flags(trt: Any) -> int:
    """``create_network`` flags for a strongly typed network; BackendUnavailableError when impossible."""
    missing = [name for name in REQUIRED_API if not hasattr(trt, name)]
    missing += [f"Builder.{name}" for name in REQUIRED_BUILDER_API if not hasattr(getattr(trt, "Builder", None), name)]
    features = tensorrt_features(trt)
    if missing:
        raise BackendUnavailableError(
            f"TensorRT {features.version} lacks {', '.join(missing)}, which the engine build needs; "
            "reidcompress supports TensorRT 10.x and 11.x"
        )
    if not features.explicit_precision:
        raise BackendUnavailableError(
            f"TensorRT {features.version} has no strongly typed networks: reidcompress builds explicit-precision "
            "engines (FP16 and Q/DQ INT8 models), which need TensorRT 10 or newer (on Jetson: JetPack 6.1 or later, "
            "TensorRT 10.3; JetPack 6.0 ships 8.6)"
        )
    if features.strongly_typed_flag:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # strong typing is the only mode left


def check_tensorrt() -> dict[str, str]:
    """The TensorRT/GPU an engine built here would record; BackendUnavailableError unless the build can run."""
    info = runtime_info()
    import tensorrt as trt

    network_flags(trt)
    return info


def _zero_point(proto: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in proto.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    for node in proto.graph.node:
        if node.op_type == "Constant" and name in node.output:
            return onnx.numpy_helper.to_array(node.attribute[0].t)
    return None


def _check_symmetric_int8(proto: onnx.ModelProto, where: str) -> None:
    """TensorRT's Q/DQ must be int8 with zero point 0 (uint8/asymmetric is a DLA-only opt-in)."""
    for node in proto.graph.node:
        if node.op_type not in Q_DQ:
            continue
        zp = _zero_point(proto, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
            got = "no zero point (uint8)" if zp is None else f"{zp.dtype} zero points, max |zp| {int(np.abs(zp).max())}"
            raise InputError(
                f"{where}: {node.op_type} {node.name or node.output[0]!r} has {got}: that is an ONNX Runtime CPU "
                "model; TensorRT needs symmetric int8 Q/DQ (zero point 0), the model export writes for a "
                "TensorRT INT8 build (quantize_onnx fmt='trt')"
            )


def model_precision(proto: onnx.ModelProto, where: str = "model") -> str:
    """The engine precision an ONNX model asks for: int8 (Q/DQ), fp16 (float16 weights) or fp32."""
    ops = {n.op_type for n in proto.graph.node}
    if ops & set(Q_DQ):
        _check_symmetric_int8(proto, where)
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer):
        return "fp16"
    return "fp32"


def _batch_range(proto: onnx.ModelProto, spec: EngineSpec) -> tuple[int, int, int]:
    """The profile's batches; a static-batch model builds at exactly its batch."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not dim.HasField("dim_value"):
        return spec.min_batch, spec.opt_batch, spec.max_batch
    b = int(dim.dim_value)
    return b, b, b


def _parse(builder: trt.Builder, logger: trt.ILogger, onnx_path: Path) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    import tensorrt as trt

    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse {onnx_path.name}: {'; '.join(errors) or 'no reason given'}"
        )
    return network, parser


def _serialize(
    onnx_path: Path, batches: tuple[int, int, int], shape: tuple[int, int], spec: EngineSpec, timing_cache: Path
) -> bytes:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(builder, logger, onnx_path)  # the parser owns weights the network uses
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    h, w = shape
    lo, opt, hi = (trt.Dims4(b, 3, h, w) for b in batches)
    profile.set_shape(INPUT, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)  # a stale cache only costs build time
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not build an engine from {onnx_path.name} "
            "(its log above says why: unsupported layer, workspace, GPU memory)"
        )
    with atomic_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(memoryview(cache.serialize())))
    return bytes(memoryview(serialized))


def _build_bytes(
    onnx_path: Path, batches: tuple[int, int, int], shape: tuple[int, int], spec: EngineSpec, timing_cache: Path
) -> bytes:
    """``_serialize`` with whatever the bindings raise turned into one EngineBuildError."""
    try:
        return _serialize(onnx_path, batches, shape, spec, timing_cache)
    except ReidCompressError:
        raise
    except Exception as e:  # noqa: BLE001 - the bindings raise TypeError, RuntimeError, their own types
        raise EngineBuildError(f"TensorRT failed on {onnx_path.name}: {type(e).__name__}: {e}") from None


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    spec: EngineSpec | None = None,
    *,
    timing_cache: str | os.PathLike[str] | None = None,
    record: dict[str, Any] | None = None,
) -> EngineResult:
    """Build a serialized engine of an ONNX model and its sidecar, at the precision the model carries.

    The model is checked first (reidcompress metadata, symmetric int8 Q/DQ), then TensorRT and the GPU
    (BackendUnavailableError), then the build (EngineBuildError); nothing is written unless all pass.
    The timing cache is loaded when present and saved after the build, so rebuilds on the same device
    are fast. ``record`` (e.g. the ONNX model's parity with fp32) goes into the sidecar.
    """
    spec = spec or EngineSpec()
    src = require_file(onnx_path, "ONNX model")
    meta = read_metadata(src)
    if "input_size" not in meta:
        raise InputError(f"{src}: not a reidcompress ONNX model (no input size in its metadata)")
    shape = (int(meta["input_size"][0]), int(meta["input_size"][1]))
    proto = onnx.load(str(src), load_external_data=False)
    precision = model_precision(proto, str(src))
    batches = _batch_range(proto, spec)
    info = check_tensorrt()
    tcache = Path(timing_cache) if timing_cache else Path(engine_path).with_suffix(".timing.cache")
    serialized = _build_bytes(src, batches, shape, spec, tcache)
    sidecar = {
        **info,
        **asdict(spec),
        "min_batch": batches[0],
        "opt_batch": batches[1],
        "max_batch": batches[2],
        "precision": precision,
        "strongly_typed": True,
        "input_size": list(shape),
        "onnx": src.name,
        "source_sha256": meta.get("source_sha256"),
        "embedding_dim": int(meta.get("embedding_dim", 0)),
        "flops": int(meta.get("flops", 0)),
        "params": int(meta.get("params", 0)),
        "arch": meta.get("arch"),
        # The TensorRT backend feeds the engine what its ONNX graph takes.
        INPUT_FORMAT_KEY: meta.get(INPUT_FORMAT_KEY, "unit"),
        "mean": meta.get("mean"),
        "std": meta.get("std"),
        **(record or {}),
    }
    _publish(Path(engine_path), serialized, sidecar)
    return EngineResult(Path(engine_path), sidecar)


def _publish(engine: Path, serialized: bytes, sidecar: dict[str, Any]) -> None:
    """Both files or neither: each is written beside its final name and renamed only once both are
    complete (the engine first, its sidecar right after; the runtime refuses an engine without one)."""
    with atomic_path(sidecar_path(engine)) as side_tmp:
        side_tmp.write_text(json.dumps(sidecar, indent=2))
        with atomic_path(engine) as tmp:
            tmp.write_bytes(serialized)
