"""The INT8 formats: how ``quantize_static`` is called for each target, and which one this CPU wants.

ONNX Runtime's CPU integer kernels differ per CPU kind (``onnxruntime/quantization/quantize.py``,
"Choosing parameters for CPU inference"). On x86-64 without VNNI the u8s8 kernels multiply with
``vpmaddubsw``, whose int16 pair sums saturate, so ORT recommends 7-bit weights (``reduce_range``);
with VNNI (``vpdpbusd``, AVX-512 or AVX-VNNI) they accumulate in int32 and need no range reduction;
ARM's kernels prefer symmetric int8 activations. TensorRT takes only symmetric int8 Q/DQ (zero point 0)
and follows float fake-quantization arithmetic, so its format is judged that way (REFERENCE.md 9, 10).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reidcompress.errors import InputError

__all__ = [
    "INT8_FORMATS",
    "Int8Format",
    "FORMAT_SPECS",
    "check_int8_format",
    "cpu_flags",
    "detect_int8_format",
    "gate_for",
]

ARM_MACHINES = frozenset({"aarch64", "arm64", "armv8l", "armv8b"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class Int8Format:
    """One way of calling ``quantize_static``; ``gate`` says which ORT arithmetic judges the model."""

    description: str
    target: str
    activations: str  # "uint8" (asymmetric) or "int8" (symmetric)
    reduce_range: bool
    gate: str  # "integer kernels" (ORT CPU runs it) or "fake-quant" (TensorRT runs it)
    extra_options: dict[str, Any] = field(default_factory=dict)


FORMAT_SPECS: dict[str, Int8Format] = {
    "u8s8": Int8Format(
        "x86-64 with VNNI: uint8 asymmetric activations, int8 symmetric per-channel weights",
        "ONNX Runtime CPU, x86-64 with AVX-512 VNNI or AVX-VNNI",
        "uint8",
        False,
        "integer kernels",
    ),
    "u8s8-rr": Int8Format(
        "x86-64 without VNNI (AVX2): u8s8 with reduce_range=True (7-bit weights, no integer saturation)",
        "ONNX Runtime CPU, x86-64 without VNNI",
        "uint8",
        True,
        "integer kernels",
    ),
    "s8s8": Int8Format(
        "ARM (aarch64): symmetric int8 activations and per-channel weights",
        "ONNX Runtime CPU, ARM aarch64",
        "int8",
        False,
        "integer kernels",
        {"ActivationSymmetric": True},
    ),
    "trt": Int8Format(
        "TensorRT explicit quantization: symmetric int8 Q/DQ activations, per-channel symmetric int8 "
        "weights, zero points 0, float biases, Q/DQ on both inputs of residual Adds",
        "TensorRT (explicit quantization, strongly typed)",
        "int8",
        False,
        "fake-quant",
        # TensorRT fuses the bias into its int8 convolution itself and has no int32 DequantizeLinear.
        {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    ),
}

INT8_FORMATS: dict[str, str] = {name: spec.description for name, spec in FORMAT_SPECS.items()}


def check_int8_format(fmt: str, name: str = "fmt", exclude: tuple[str, ...] = ()) -> str:
    """``fmt`` if it is ``"auto"`` or a known format not in ``exclude``; ``name`` is how the error names the
    setting (an entry point that refuses a format lists only the ones it takes)."""
    allowed = [f for f in FORMAT_SPECS if f not in exclude]
    if fmt != "auto" and fmt not in allowed:
        raise InputError(f"{name} must be one of auto, {', '.join(allowed)}, got {fmt!r}")
    return fmt


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the CPU this runs on, as CPUID reports them.

    torch's cpuinfo reads CPUID, which an emulator (``qemu-x86_64 -cpu Haswell``) answers for the
    emulated CPU, while ``/proc/cpuinfo`` shows the host's; the file is the fallback for old torch.
    """
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        return frozenset(k for k, v in caps.items() if v is True)
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def detect_int8_format(flags: Iterable[str] | None = None, machine: str | None = None) -> tuple[str, str]:
    """(format, reason) for the CPU this runs on, or for the ``flags`` and ``machine`` given."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in ARM_MACHINES:
        return "s8s8", f"{machine} CPU: ONNX Runtime recommends symmetric int8 activations on ARM"
    have = frozenset(flags) if flags is not None else cpu_flags()
    if machine in X86_MACHINES:
        vnni = [f for f in VNNI_FLAGS if f in have]
        if vnni:
            return "u8s8", f"x86-64 CPU with {'/'.join(vnni)}: u8s8 kernels accumulate in int32 without saturation"
        return "u8s8-rr", (
            "x86-64 CPU without VNNI (no avx512_vnni/avx_vnni): ONNX Runtime recommends reduce_range "
            "against integer saturation in its u8s8 kernels"
        )
    return "u8s8-rr", f"{machine or 'unknown'} CPU: reduce_range, the format no integer kernel saturates on"


def gate_for(fmt: str, native: str) -> str:
    """Which arithmetic judges a model of format ``fmt`` on a CPU whose own format is ``native``.

    This CPU's integer kernels, when they compute ``fmt`` as its target CPU does: its own format, or
    7-bit ``u8s8-rr`` on a VNNI CPU (exact there too). Otherwise (TensorRT's Q/DQ, or a model quantized
    here for another CPU, e.g. ``u8s8`` on an AVX2 laptop for a VNNI server) float fake-quantization:
    this CPU's kernels would judge its own saturation, not what the target computes.
    """
    spec = FORMAT_SPECS[fmt]
    if spec.gate == "fake-quant":
        return spec.gate
    return spec.gate if fmt == native or (native, fmt) == ("u8s8", "u8s8-rr") else "fake-quant"
