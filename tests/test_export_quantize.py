"""INT8 formats per target CPU, the TensorRT Q/DQ model's structure, FP16 for TensorRT, and the gates."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from reidcompress.errors import InputError
from reidcompress.export.onnx import ExportError, read_metadata, write_onnx
from reidcompress.export.parity import ParityReport
from reidcompress.export.quantize import (
    INT8_FORMATS,
    check_int8_format,
    convert_fp16,
    detect_int8_format,
    quantize_onnx,
)
from reidcompress.models.reid import ReIDConfig, ReIDNet
from reidcompress.runtime.onnx_backend import OnnxEmbedder

AVX2 = ["sse4_2", "avx", "avx2", "fma"]


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("aarch64", [], "s8s8"),
        ("arm64", ["asimd"], "s8s8"),  # macOS names it arm64
        ("x86_64", [*AVX2, "avx512_f", "avx512_vnni"], "u8s8"),
        ("AMD64", [*AVX2, "avx_vnni"], "u8s8"),  # Windows' name; Alder Lake-style AVX-VNNI without AVX-512
        ("x86_64", AVX2, "u8s8-rr"),
        ("x86_64", [*AVX2, "avx512_f", "avx512_bw"], "u8s8-rr"),  # Skylake-SP: AVX-512 without VNNI
        ("riscv64", [], "u8s8-rr"),
    ],
)
def test_format_per_cpu(machine, flags, expected) -> None:
    fmt, reason = detect_int8_format(flags=flags, machine=machine)
    assert fmt == expected and fmt in INT8_FORMATS
    assert machine.lower() in reason or "x86-64" in reason


def test_format_of_this_cpu_and_bad_names() -> None:
    assert detect_int8_format()[0] in {"u8s8", "u8s8-rr", "s8s8"}
    assert check_int8_format("auto") == "auto" and set(INT8_FORMATS) == {"u8s8", "u8s8-rr", "s8s8", "trt"}
    with pytest.raises(InputError, match=r"^fmt must be one of auto, u8s8"):
        check_int8_format("int4")
    with pytest.raises(InputError, match="--int8-format must be"):
        check_int8_format("u8", name="--int8-format")


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = ReIDNet(ReIDConfig(arch="tiny", num_classes=5, input_size=(64, 32))).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("quant") / "m.onnx"
    meta = {"reidcompress.precision": "fp32", "reidcompress.input_size": "[64, 32]"}
    write_onnx(model, path, opset=17, metadata=meta)
    rng = np.random.default_rng(0)
    return path, [rng.random((8, 3, 64, 32), dtype=np.float32) for _ in range(4)]


def _graph(path):
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    return proto, inits, producer


@pytest.fixture(scope="module")
def trt_model(fp32_model, tmp_path_factory):
    path, batches = fp32_model
    out = tmp_path_factory.mktemp("trt") / "m.trt.onnx"
    return quantize_onnx(path, out, batches, fmt="trt")


def test_trt_qdq_is_symmetric_int8_with_per_channel_weights(trt_model) -> None:
    proto, inits, producer = _graph(trt_model.path)
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(len(n.input) == 3 for n in qdq)
    zero_points = [inits[n.input[2]] for n in qdq]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric int8: every zero point 0
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    for conv in convs:
        weight_dq = producer[conv.input[1]]
        weight, scale = inits[weight_dq.input[0]], inits[weight_dq.input[1]]
        assert weight_dq.op_type == "DequantizeLinear" and weight.dtype == np.int8
        assert scale.shape == (weight.shape[0],)  # one scale per output channel
        assert len(conv.input) < 3 or conv.input[2] in inits  # TensorRT fuses a float bias: no int32 DQ
    assert not any(v.dtype == np.int32 for v in inits.values())


def test_trt_residual_adds_have_qdq_on_both_inputs(trt_model) -> None:
    proto, _, producer = _graph(trt_model.path)
    adds = [n for n in proto.graph.node if n.op_type == "Add"]
    assert len(adds) == 4  # one residual block per stage in `tiny`
    for add in adds:
        for name in add.input:
            dq = producer[name]
            assert dq.op_type == "DequantizeLinear" and producer[dq.input[0]].op_type == "QuantizeLinear", add.name


def test_int8_metadata_says_format_reason_and_target(trt_model, fp32_model, tmp_path) -> None:
    meta = read_metadata(trt_model.path)
    quant = json.loads(meta["quantization"])
    assert meta["precision"] == "int8" and meta["int8_format"] == "trt" and meta["input_size"] == [64, 32]
    assert quant["chosen"] == "by hand" and "TensorRT" in quant["target"] and quant["judged_with"] == "fake-quant"
    path, batches = fp32_model
    auto = quantize_onnx(path, tmp_path / "auto.onnx", batches[:1])
    fmt, reason = detect_int8_format()
    quant = json.loads(read_metadata(auto.path)["quantization"])
    assert (auto.fmt, auto.reason, quant["int8_format"], quant["reason"]) == (fmt, reason, fmt, reason)
    assert quant["chosen"] == "auto" and isinstance(quant["quantized_on_cpu_flags"], list)


@pytest.mark.parametrize(("fmt", "act", "weight_max"), [("u8s8", np.uint8, 127), ("u8s8-rr", np.uint8, 64),
                                                        ("s8s8", np.int8, 127)])  # fmt: skip
def test_cpu_formats(fp32_model, tmp_path, fmt, act, weight_max) -> None:
    path, batches = fp32_model
    res = quantize_onnx(path, tmp_path / "q.onnx", batches, fmt=fmt)
    proto, inits, _ = _graph(res.path)
    acts = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert acts and all(z.dtype == act for z in acts)
    if act == np.int8:
        assert not any(z.any() for z in acts)
    weights = [v for v in inits.values() if v.dtype == np.int8 and v.ndim == 4]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == weight_max
    assert read_metadata(res.path)["int8_format"] == fmt


def test_trt_model_runs_as_fake_quant_by_default(trt_model, fp32_model) -> None:
    x = np.concatenate(fp32_model[1])[:6]
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    reference = ort.InferenceSession(str(trt_model.path), opts, providers=["CPUExecutionProvider"])
    expected = reference.run(None, {"images": x})[0]
    default, kernels = OnnxEmbedder(trt_model.path), OnnxEmbedder(trt_model.path, fake_quant=False)
    assert default.describe()["int8_arithmetic"] == "fake-quant" and default.describe()["int8_format"] == "trt"
    assert kernels.describe()["int8_arithmetic"] == "integer kernels"
    np.testing.assert_allclose(default.embed(x), expected, rtol=0, atol=1e-6)


def test_gate_follows_the_format(fp32_model, trt_model, tmp_path) -> None:
    path, batches = fp32_model
    x = np.concatenate(batches)
    res = quantize_onnx(path, tmp_path / "t.onnx", batches, fmt="trt", parity_images=x, min_cosine=0.0)
    assert res.gate == "fake-quant" and res.parity is res.parity_fake_quant and res.parity_kernels is not None
    assert res.to_dict()["parity_fake_quant"]["min_cosine"] == res.parity_fake_quant.min_cosine
    res = quantize_onnx(path, tmp_path / "c.onnx", batches, fmt="u8s8-rr", parity_images=x, min_cosine=0.0)
    assert res.gate == "integer kernels" and res.parity is res.parity_kernels
    with pytest.raises(ExportError, match=r"INT8 \(trt\) model's embeddings differ too much from fp32 with fake-quant"):
        quantize_onnx(path, tmp_path / "bad.onnx", batches, fmt="trt", parity_images=x, min_cosine=1.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.onnx", "t.onnx"]


@pytest.mark.parametrize(
    ("fmt", "native", "gate"),
    [
        ("u8s8", "u8s8", "integer kernels"),  # quantized on the VNNI server it runs on
        ("u8s8-rr", "u8s8", "integer kernels"),  # 7-bit weights are exact on VNNI too
        ("u8s8-rr", "u8s8-rr", "integer kernels"),
        ("u8s8", "u8s8-rr", "fake-quant"),  # on an AVX2 laptop for a VNNI server: its kernels would saturate here
        ("s8s8", "u8s8", "fake-quant"),  # for ARM, quantized on x86
        ("s8s8", "s8s8", "integer kernels"),
        ("u8s8-rr", "s8s8", "fake-quant"),
        ("trt", "u8s8", "fake-quant"),
        ("trt", "s8s8", "fake-quant"),
    ],
)
def test_a_model_for_another_target_is_judged_as_fake_quant(fmt, native, gate) -> None:
    from reidcompress.export._int8_formats import gate_for

    assert gate_for(fmt, native) == gate


def test_hand_chosen_format_for_another_cpu_records_its_gate(fp32_model, tmp_path) -> None:
    path, batches = fp32_model
    native = detect_int8_format()[0]
    other = "s8s8" if native != "s8s8" else "u8s8"
    res = quantize_onnx(path, tmp_path / "o.onnx", batches, fmt=other, parity_images=np.concatenate(batches))
    assert res.gate == "fake-quant" and res.parity is res.parity_fake_quant and res.parity_kernels is not None
    assert json.loads(read_metadata(tmp_path / "o.onnx")["quantization"])["judged_with"] == "fake-quant"


def _report(cos: float) -> ParityReport:
    return ParityReport(37, 0.5, 0.1, cos, cos, 0.98)


def test_gate_error_tells_saturation_from_bad_calibration() -> None:
    from reidcompress.export.quantize import _gate_error

    kernels = "integer kernels"
    msg = _gate_error("u8s8", _report(0.80), _report(0.996), kernels)
    assert "integer saturation" in msg and "fmt='u8s8-rr'" in msg and "0.8000" in msg and "0.9960" in msg
    msg = _gate_error("u8s8-rr", _report(0.80), _report(0.996), kernels)
    assert "integer saturation" in msg and "fmt='u8s8-rr'" not in msg
    msg = _gate_error("u8s8", _report(0.80), _report(0.90), kernels)
    assert "saturation" not in msg and "integer kernels" in msg
    msg = _gate_error("s8s8", _report(0.80), _report(0.90), "fake-quant")
    assert "saturation" not in msg and "with fake-quant: " in msg and "0.9000" in msg


def test_fp16_keeps_io_normalisation_and_head_in_fp32(fp32_model, tmp_path) -> None:
    path, batches = fp32_model
    res = convert_fp16(path, tmp_path / "h.onnx", parity_images=np.concatenate(batches))
    assert res.parity is not None and res.parity.passed and res.parity.max_abs_diff > 0
    proto, inits, _ = _graph(res.path)
    io = [*proto.graph.input, *proto.graph.output]
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in io)
    by_name = {n.name: n for n in proto.graph.node}
    kept = {by_name[name].op_type for name in res.kept_fp32}
    assert {"Sub", "Div", "BatchNormalization", "GlobalAveragePool"} <= kept and "Conv" not in kept
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    assert all(inits[name].dtype == np.float32 for name in bn.input[1:])
    conv_weights = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.dtype == np.float16 for w in conv_weights)
    meta = read_metadata(res.path)
    assert meta["precision"] == "fp16" and json.loads(meta["fp16_kept_fp32"]) == list(res.kept_fp32)
    with pytest.raises(ExportError, match="FP16 model's embeddings differ"):
        convert_fp16(path, tmp_path / "bad.onnx", parity_images=np.concatenate(batches), min_cosine=1.01)
    assert not (tmp_path / "bad.onnx").exists()
