"""TensorRT: the explicit-precision build against API-surface fakes of TensorRT 8.6, 10 and 11, the sidecar,
the runtime's dtypes, and `trt` tests for real engines.

The fakes expose what each generation's bindings offer (REFERENCE.md section 9): 10.x has the weak-typing
builder flags, the INT8 calibrators and ``STRONGLY_TYPED``; 11.x has neither flags nor calibrators
(``STRONGLY_TYPED`` still listed, deprecated); 8.6 has the flags and calibrators but no strong typing.
Each fake records every call, so the tests see which path the build took.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from reidcompress.errors import BackendUnavailableError, CheckpointError, EngineBuildError, InputError
from reidcompress.export.tensorrt import EngineSpec, build_engine, model_precision, tensorrt_features
from reidcompress.formats import engine_sidecar
from reidcompress.formats.engine_sidecar import check_engine_compatible, read_sidecar, require_tensorrt, sidecar_path
from reidcompress.runtime import load_embedder


def _has_tensorrt() -> bool:
    try:
        require_tensorrt()
        import torch

        return torch.cuda.is_available()
    except BackendUnavailableError:
        return False


SIDECAR = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "input_size": [256, 128]}


# ---------------------------------------------------------------- API-surface fakes


class _Recorder:
    """Records attribute writes and method calls; an attribute it was not given raises AttributeError."""

    def __init__(self, log: list[tuple[Any, ...]], **methods: Any) -> None:
        object.__setattr__(self, "_log", log)
        for name, fn in methods.items():
            object.__setattr__(self, name, fn)

    def __setattr__(self, name: str, value: Any) -> None:
        self._log.append(("set", name, value))
        object.__setattr__(self, name, value)


def make_tensorrt(generation: str, *, parse_ok: bool = True, build_ok: bool = True) -> types.ModuleType:
    """A ``tensorrt`` module with the API surface of ``generation`` ("8.6", "10", "11", "11-noflag")."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = {"8.6": "8.6.2.3", "10": "10.3.0.30", "11": "11.4.0.106", "11-noflag": "11.9.0"}[generation]
    log: list[tuple[Any, ...]] = []
    trt.calls = log  # type: ignore[attr-defined]
    weak = generation in ("8.6", "10")
    flags = {"EXPLICIT_BATCH": 0} if generation != "11-noflag" else {}
    if generation in ("10", "11"):
        flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    trt.BuilderFlag = types.SimpleNamespace(TF32=7, **({"FP16": 0, "INT8": 1} if weak else {}))
    if weak:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=0: None})
    trt.ILogger = trt.Logger
    trt.Dims4 = lambda *dims: tuple(dims)
    trt.nptype = lambda dtype: {"FLOAT": np.float32, "HALF": np.float16}[dtype]

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network: Any, logger: Any) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            log.append(("parse", path))
            self.network.onnx = onnx.load(path)
            return parse_ok

        def get_error(self, i: int) -> Any:
            return types.SimpleNamespace(desc=lambda: "Unsupported ONNX op 'Frobnicate'")

    trt.OnnxParser = Parser

    def config() -> _Recorder:
        def set_flag(flag: Any) -> None:
            log.append(("set_flag", flag))

        methods: dict[str, Any] = {
            "set_memory_pool_limit": lambda pool, size: log.append(("pool", pool, size)),
            "add_optimization_profile": lambda p: log.append(("profile", p.shapes)),
            "create_timing_cache": lambda data: types.SimpleNamespace(serialize=lambda: b"timing:" + bytes(data)),
            "set_timing_cache": lambda cache, ignore_mismatch: log.append(("timing_cache", ignore_mismatch)),
        }
        if weak:  # what TensorRT 10 still has and the explicit path must not touch
            methods |= {"set_flag": set_flag, "set_calibration_profile": lambda p: log.append(("calib_profile", p))}
        return _Recorder(log, **methods)

    class Profile:
        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes = {name: (lo, opt, hi)}

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int = 0) -> Any:
            log.append(("create_network", flags))
            return types.SimpleNamespace()

        def create_builder_config(self) -> _Recorder:
            return config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Any, cfg: Any) -> bytes | None:
            log.append(("build",))
            if not build_ok:
                return None
            return b"ENGINE " + model_precision(network.onnx).encode()

    trt.Builder = Builder
    return trt


@pytest.fixture
def fake_gpu(monkeypatch) -> None:
    monkeypatch.setattr(engine_sidecar, "_gpu", lambda: ("Fake GPU", "8.9"))


def use_tensorrt(monkeypatch, generation: str, **kwargs: Any) -> types.ModuleType:
    trt = make_tensorrt(generation, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory) -> Path:
    from reidcompress.export.onnx import export_onnx
    from reidcompress.models.checkpoint import save_model
    from reidcompress.models.reid import ReIDConfig, ReIDNet

    tmp = tmp_path_factory.mktemp("trt")
    model = ReIDNet(ReIDConfig(arch="tiny", num_classes=5, input_size=(64, 32))).eval()
    return export_onnx(save_model(tmp / "t.pt", model), tmp / "t.onnx").path


# ---------------------------------------------------------------- the explicit path on both generations


@pytest.mark.parametrize("generation", ["10", "11", "11-noflag"])
def test_both_generations_build_strongly_typed_without_precision_flags(
    monkeypatch, tmp_path, fake_gpu, fp32_onnx, generation
) -> None:
    trt = use_tensorrt(monkeypatch, generation)
    engine = tmp_path / "t.engine"
    result = build_engine(fp32_onnx, engine, EngineSpec(1, 4, 8, workspace_mib=64))
    calls = trt.calls
    assert ("create_network", 0 if generation == "11-noflag" else 1 << 1) in calls
    assert not [c for c in calls if c[0] in ("set_flag", "calib_profile", "set")], calls  # no flag, no calibrator
    assert ("pool", "workspace", 64 << 20) in calls
    assert ("profile", {"images": ((1, 3, 64, 32), (4, 3, 64, 32), (8, 3, 64, 32))}) in calls
    assert engine.read_bytes() == b"ENGINE fp32"
    sidecar = read_sidecar(engine)
    assert sidecar == result.sidecar and sidecar["tensorrt_version"] == trt.__version__
    assert sidecar["precision"] == "fp32" and sidecar["strongly_typed"] and sidecar["compute_capability"] == "8.9"
    assert (tmp_path / "t.timing.cache").read_bytes() == b"timing:"
    assert tensorrt_features(trt).weak_typing == (generation == "10")


def test_static_batch_model_builds_at_its_batch(monkeypatch, tmp_path, fake_gpu, fp32_onnx) -> None:
    trt = use_tensorrt(monkeypatch, "11")
    proto = onnx.load(str(fp32_onnx))
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(proto, str(tmp_path / "static.onnx"))
    result = build_engine(tmp_path / "static.onnx", tmp_path / "s.engine", EngineSpec(1, 8, 32))
    assert ("profile", {"images": ((4, 3, 64, 32),) * 3}) in trt.calls
    assert (result.sidecar["min_batch"], result.sidecar["max_batch"]) == (4, 4)


# ---------------------------------------------------------------- errors: one ReidCompressError, nothing written


def _assert_nothing_written(tmp_path: Path) -> None:
    assert not [p.name for p in tmp_path.iterdir() if p.suffix in (".engine", ".json", ".cache", ".tmp")]


def test_tensorrt_8_is_refused(monkeypatch, tmp_path, fake_gpu, fp32_onnx) -> None:
    use_tensorrt(monkeypatch, "8.6")
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 8\.6\.2\.3 has no strongly typed.*JetPack 6\.1"):
        build_engine(fp32_onnx, tmp_path / "t.engine")
    _assert_nothing_written(tmp_path)


def test_missing_api_is_named(monkeypatch, tmp_path, fake_gpu, fp32_onnx) -> None:
    trt = use_tensorrt(monkeypatch, "11")
    del trt.OnnxParser
    with pytest.raises(BackendUnavailableError, match="lacks OnnxParser"):
        build_engine(fp32_onnx, tmp_path / "t.engine")
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parse_ok": False}, "could not parse t.onnx: Unsupported ONNX op 'Frobnicate'"),
        ({"build_ok": False}, "could not build an engine from t.onnx"),
    ],
)
def test_parse_and_build_failures(monkeypatch, tmp_path, fake_gpu, fp32_onnx, kwargs, message) -> None:
    use_tensorrt(monkeypatch, "10", **kwargs)
    with pytest.raises(EngineBuildError, match=message):
        build_engine(fp32_onnx, tmp_path / "t.engine")
    _assert_nothing_written(tmp_path)


def test_a_raising_binding_is_an_engine_build_error(monkeypatch, tmp_path, fake_gpu, fp32_onnx) -> None:
    trt = use_tensorrt(monkeypatch, "11")

    def boom(self: Any, network: Any, cfg: Any) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(trt.Builder, "build_serialized_network", boom)
    with pytest.raises(EngineBuildError, match="RuntimeError: CUDA out of memory"):
        build_engine(fp32_onnx, tmp_path / "t.engine")
    _assert_nothing_written(tmp_path)


def test_no_gpu_is_refused_before_building(monkeypatch, tmp_path, fp32_onnx) -> None:
    import torch

    trt = use_tensorrt(monkeypatch, "11")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="NVIDIA GPU"):
        build_engine(fp32_onnx, tmp_path / "t.engine")
    assert not [c for c in trt.calls if c[0] == "build"]
    _assert_nothing_written(tmp_path)


def test_stub_only_tensorrt_is_not_installed(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs leaves
    with pytest.raises(BackendUnavailableError, match="only type stubs"):
        require_tensorrt()


# ---------------------------------------------------------------- precision comes from the model


def _qdq_model(zero_point: np.ndarray | None) -> onnx.ModelProto:
    """x -> QuantizeLinear -> DequantizeLinear -> y, with the given zero point (None: omitted)."""
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale")]
    q_inputs, dq_inputs = ["x", "scale"], ["q", "scale"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
        q_inputs.append("zp")
        dq_inputs.append("zp")
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", q_inputs, ["q"]), helper.make_node("DequantizeLinear", dq_inputs, ["y"])],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph)


def test_model_precision_and_the_symmetric_int8_rule(fp32_onnx) -> None:
    assert model_precision(onnx.load(str(fp32_onnx))) == "fp32"
    assert model_precision(_qdq_model(np.array(0, np.int8))) == "int8"
    with pytest.raises(InputError, match=r"uint8 zero points.*symmetric int8"):
        model_precision(_qdq_model(np.array(128, np.uint8)))
    with pytest.raises(InputError, match=r"int8 zero points, max \|zp\| 3"):
        model_precision(_qdq_model(np.array(3, np.int8)))
    with pytest.raises(InputError, match="no zero point"):
        model_precision(_qdq_model(None))


def test_fp16_model_builds_an_fp16_engine(monkeypatch, tmp_path, fake_gpu, fp32_onnx) -> None:
    from onnxconverter_common import float16

    proto = float16.convert_float_to_float16(onnx.load(str(fp32_onnx)), keep_io_types=True)
    onnx.save(proto, str(tmp_path / "t.fp16.onnx"))
    use_tensorrt(monkeypatch, "11")
    result = build_engine(tmp_path / "t.fp16.onnx", tmp_path / "t.engine")
    assert result.sidecar["precision"] == "fp16" and (tmp_path / "t.engine").read_bytes() == b"ENGINE fp16"


def test_cpu_int8_model_is_refused_before_tensorrt(monkeypatch, tmp_path, fp32_onnx) -> None:
    proto = onnx.load(str(fp32_onnx))
    qdq = _qdq_model(np.array(128, np.uint8))
    proto.graph.node.extend(qdq.graph.node)
    proto.graph.initializer.extend(qdq.graph.initializer)
    onnx.save(proto, str(tmp_path / "cpu.int8.onnx"))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    with pytest.raises(InputError, match="ONNX Runtime CPU model"):
        build_engine(tmp_path / "cpu.int8.onnx", tmp_path / "t.engine")


# ---------------------------------------------------------------- sidecar and runtime


def test_engine_spec_validation() -> None:
    with pytest.raises(InputError, match="min batch <= opt batch"):
        EngineSpec(min_batch=8, opt_batch=4, max_batch=16)
    with pytest.raises(InputError, match="workspace"):
        EngineSpec(workspace_mib=1)


def test_compatible_engine_passes_and_mismatches_are_refused() -> None:
    check_engine_compatible(SIDECAR, {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(CheckpointError, match="TensorRT 10.3.0.*TensorRT 10.7.0.*rebuild"):
        check_engine_compatible(
            SIDECAR, {"tensorrt_version": "10.7.0", "gpu_name": "Orin", "compute_capability": "8.7"}
        )
    with pytest.raises(CheckpointError, match="compute capability 8.7.*9.0"):
        check_engine_compatible(
            SIDECAR, {"tensorrt_version": "10.3.0", "gpu_name": "H100", "compute_capability": "9.0"}
        )


def test_sidecar_required_and_validated(tmp_path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(CheckpointError, match="no sidecar"):
        read_sidecar(engine)
    with pytest.raises(CheckpointError, match="no sidecar"):
        load_embedder(engine)
    sidecar_path(engine).write_text("{broken")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"tensorrt_version": "10.3"}))
    with pytest.raises(CheckpointError, match="lacks"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps(SIDECAR))
    assert read_sidecar(engine)["gpu_name"] == "Orin"


@pytest.mark.skipif(_has_tensorrt(), reason="TensorRT and a GPU are present")
def test_without_tensorrt_a_clear_error(tmp_path) -> None:
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        require_tensorrt()
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 32)
    sidecar_path(engine).write_text(json.dumps(SIDECAR))
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        load_embedder(engine)


def _fake_runtime(monkeypatch, in_dtype: str, out_dtype: str) -> list[Any]:
    """TensorRT and Polygraphy's CUDA buffers, as far as TrtEmbedder uses them; returns the allocations."""
    import polygraphy

    trt = use_tensorrt(monkeypatch, "11")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    dtypes = {"images": in_dtype, "embeddings": out_dtype}
    allocations: list[Any] = []

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["images", "embeddings"][i]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name == "images" else "out"

        def get_tensor_dtype(self, name: str) -> str:
            return dtypes[name]

        def create_execution_context(self) -> Any:
            return Context()

    class Context:
        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> None:
            self.batch = shape[0]

        def get_tensor_shape(self, name: str) -> tuple[int, int]:
            return (self.batch, 3)

        def set_tensor_address(self, name: str, ptr: Any) -> None:
            setattr(self, name, ptr)

        def execute_async_v3(self, stream: Any) -> bool:
            x = self.images.host  # the "kernel": per-image channel means as the embedding
            self.embeddings.host = x.reshape(len(x), 3, -1).mean(-1).astype(self.embeddings.dtype)
            return True

    class DeviceArray:
        def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
            self.dtype, self.ptr = np.dtype(dtype), self
            allocations.append(self.dtype)

        def copy_from(self, host: np.ndarray, stream: Any) -> None:
            assert host.dtype == self.dtype
            self.host = host.copy()

        def copy_to(self, host: np.ndarray, stream: Any) -> None:
            host[...] = self.host

        def free(self) -> None:
            pass

    stream = types.SimpleNamespace(ptr=0, synchronize=lambda: None, free=lambda: None)
    cuda = types.SimpleNamespace(DeviceArray=DeviceArray, Stream=lambda: stream)
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda data: Engine())
    monkeypatch.setattr(polygraphy, "cuda", cuda, raising=False)
    monkeypatch.setitem(sys.modules, "polygraphy.cuda", cuda)
    return allocations


@pytest.mark.parametrize(("in_dtype", "out_dtype"), [("FLOAT", "FLOAT"), ("HALF", "HALF"), ("FLOAT", "HALF")])
def test_runtime_takes_io_dtypes_from_the_engine(monkeypatch, tmp_path, fake_gpu, in_dtype, out_dtype) -> None:
    allocations = _fake_runtime(monkeypatch, in_dtype, out_dtype)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    sidecar_path(engine).write_text(
        json.dumps({**SIDECAR, "tensorrt_version": "11.4.0.106", "compute_capability": "8.9", "max_batch": 4})
    )
    x = np.random.default_rng(0).random((6, 3, 8, 4), dtype=np.float32)
    with load_embedder(engine) as emb:
        out = emb.embed(x)
    want = {"FLOAT": np.float32, "HALF": np.float16}
    assert allocations[:2] == [np.dtype(want[in_dtype]), np.dtype(want[out_dtype])]
    assert out.dtype == np.float32 and out.shape == (6, 3)
    ref = x.astype(want[in_dtype]).reshape(6, 3, -1).mean(-1)
    np.testing.assert_allclose(out, ref, rtol=2e-3 if "HALF" in (in_dtype, out_dtype) else 1e-6)


# ---------------------------------------------------------------- real TensorRT


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_engine_matches_onnx(tmp_path, trained_tiny, precision: str) -> None:
    from reidcompress.export.api import export_model
    from reidcompress.export.parity import check_parity
    from reidcompress.runtime.onnx_backend import OnnxEmbedder

    ckpt, root = trained_tiny
    report = export_model(
        ckpt, tmp_path / "t.onnx", trt=True, precision=precision, calib_data=root, calib_images=64,
        engine_spec=EngineSpec(1, 4, 8, 1024),
    )  # fmt: skip
    assert report.engine is not None and report.engine.sidecar["precision"] == precision
    images = np.random.default_rng(0).random((12, 3, 64, 32), dtype=np.float32)
    with load_embedder(report.engine.path) as engine, OnnxEmbedder(tmp_path / "t.onnx") as fp32:
        parity = check_parity(fp32, engine, images, {"fp32": 0.9999, "fp16": 0.999}.get(precision, 0.98))
    assert parity.passed, parity.summary()


# ---------------------------------------------------------------- export: the gated model first, then the engine


def _gated_path(out: Path, precision: str) -> Path:
    return out.with_name(f"m.{'fp16' if precision == 'fp16' else 'qdq'}.onnx")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_cli_writes_the_gated_model_then_fails_without_tensorrt(monkeypatch, tmp_path, trained_tiny, precision):
    from typer.testing import CliRunner

    from reidcompress.cli import app

    ckpt, root = trained_tiny
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed, even on a machine that has it
    out = tmp_path / "m.onnx"
    args = ["export", str(ckpt), "-o", str(out), "--trt", "--precision", precision, "--data", str(root)]
    res = CliRunner().invoke(app, [*args, "--calib-data", str(root), "--calib-images", "64", "--json"])
    assert res.exit_code == 2, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: TensorRT is not installed") and "m.engine was not" in last, last
    gated = _gated_path(out, precision)
    # --json still says what was written and gated before the build failed, and why it stopped.
    report = json.loads(res.stdout)
    assert report["onnx"] == str(out) and report["trt_onnx"]["onnx"] == str(gated) and "engine" not in report
    assert report["trt_onnx"]["parity_to_fp32"]["passed"] and report["error"] == last.removeprefix("error: ")
    assert "min cosine" in res.output and gated.exists() and out.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".engine", ".json", ".tmp")]
    proto = onnx.load(str(gated))
    io_types = {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    assert io_types == {TensorProto.FLOAT}  # fp32 I/O whatever runs inside
    assert model_precision(proto, str(gated)) == precision  # int8: symmetric, zero points 0


def test_cli_no_gpu_is_exit_2_with_no_engine(monkeypatch, tmp_path, trained_tiny) -> None:
    import torch
    from typer.testing import CliRunner

    from reidcompress.cli import app

    use_tensorrt(monkeypatch, "11")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ckpt, _ = trained_tiny
    res = CliRunner().invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "m.onnx"), "--trt", "--precision", "fp32"])
    assert res.exit_code == 2 and "needs an NVIDIA GPU" in res.output.strip().splitlines()[-1], res.output
    assert (tmp_path / "m.onnx").exists() and not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_export_model_builds_from_the_gated_model(monkeypatch, tmp_path, fake_gpu, trained_tiny, precision) -> None:
    from reidcompress.export.api import export_model

    ckpt, root = trained_tiny
    trt = use_tensorrt(monkeypatch, "10")
    out = tmp_path / "m.onnx"
    lines: list[str] = []
    report = export_model(
        ckpt, out, trt=True, precision=precision, calib_data=root, calib_images=64, parity_data=root,
        engine_spec=EngineSpec(1, 4, 8), log=lines.append,
    )  # fmt: skip
    assert [c[1] for c in trt.calls if c[0] == "parse"] == [str(_gated_path(out, precision))]
    assert (tmp_path / "m.engine").read_bytes() == f"ENGINE {precision}".encode()
    summary = report.to_dict()
    gate = summary["trt_onnx"]["parity_to_fp32"]
    assert gate["passed"] and gate["min_cosine"] >= (0.999 if precision == "fp16" else 0.98)
    assert summary["engine"]["parity_to_fp32"] == gate == read_sidecar(tmp_path / "m.engine")["parity_to_fp32"]
    assert summary["engine"]["precision"] == precision and len(lines) == 3
    if precision == "int8":  # TensorRT's Q/DQ model calibrates with entropy unless told otherwise
        assert summary["trt_onnx"]["calib_method"] == "entropy"


def test_export_model_calibrates_the_cpu_model_with_minmax_by_default(tmp_path, trained_tiny) -> None:
    from reidcompress.export.api import export_model

    ckpt, root = trained_tiny
    report = export_model(ckpt, tmp_path / "m.onnx", int8=True, calib_data=root, calib_images=32, parity_data=root)
    assert report.to_dict()["int8"]["calib_method"] == "minmax"


def test_export_model_checks_everything_before_writing(tmp_path, trained_tiny) -> None:
    from reidcompress.export.api import export_model

    ckpt, root = trained_tiny
    out = tmp_path / "m.onnx"
    with pytest.raises(InputError, match="calibration images"):
        export_model(ckpt, out, trt=True, precision="int8")
    with pytest.raises(InputError, match="`precision` must be one of"):
        export_model(ckpt, out, trt=True, precision="int4")
    with pytest.raises(InputError, match="built from the fp32 export"):
        export_model(ckpt, out, trt=True, fp16=True)
    with pytest.raises(InputError, match=r"\.engine or \.plan"):
        export_model(ckpt, out, trt=True, precision="fp32", engine=tmp_path / "m.bin")
    with pytest.raises(InputError, match="TensorRT's Q/DQ model"):
        export_model(ckpt, out, int8=True, int8_format="trt", calib_data=root)
    with pytest.raises(InputError, match=r"must be one of auto, u8s8, u8s8-rr, s8s8, got 'int4'$"):
        export_model(ckpt, out, int8=True, int8_format="int4", calib_data=root)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the latency backend takes the same path


def test_latency_backend_builds_an_fp16_engine_from_the_fp16_model(monkeypatch, fake_gpu, tiny_model) -> None:
    from reidcompress.prune.latency import BackendTimer, LatencyTarget

    _fake_runtime(monkeypatch, "FLOAT", "FLOAT")
    trt = sys.modules["tensorrt"]
    target = LatencyTarget(target_ms=5.0, backend="tensorrt", batch=2)
    target.check()
    with BackendTimer(target).deployed(tiny_model) as emb:
        assert emb.embed(np.zeros((2, 3, 64, 32), np.float32)).shape == (2, 3)
    parsed = [c[1] for c in trt.calls if c[0] == "parse"]
    assert len(parsed) == 1 and parsed[0].endswith("model.fp16.onnx")
    assert emb.sidecar["precision"] == "fp16" and not [c for c in trt.calls if c[0] == "set_flag"]


def test_latency_backend_on_tensorrt_8_is_exit_2(monkeypatch, tmp_path, fake_gpu, tiny_model) -> None:
    from typer.testing import CliRunner

    from reidcompress.cli import app
    from reidcompress.models.checkpoint import save_model
    from reidcompress.prune.latency import LatencyTarget

    use_tensorrt(monkeypatch, "8.6")
    with pytest.raises(BackendUnavailableError, match="strongly typed"):
        LatencyTarget(target_ms=5.0, backend="tensorrt").check()
    ckpt = save_model(tmp_path / "t.pt", tiny_model)
    args = ["prune", str(ckpt), "--method", "hao_li", "--target-latency", "5", "--backend", "tensorrt"]
    args += ["--out", str(tmp_path / "p.pt")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith("error: TensorRT 8.6"), res.output
    assert not (tmp_path / "p.pt").exists()
