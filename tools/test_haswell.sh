#!/usr/bin/env bash
# Run a pytest selection on an emulated Haswell CPU (AVX2, no AVX-512, no VNNI), from any x86-64 host.
#
#   tools/test_haswell.sh                                  # tests/test_export_int8.py tests/test_verify.py tests/test_export_onnx.py
#   tools/test_haswell.sh tests/test_verify.py -k broken   # any pytest arguments
#   PYTHON=.venv/bin/python tools/test_haswell.sh          # the interpreter (default: python on PATH)
#
# Most cloud VMs and edge boxes have no VNNI, and ONNX Runtime's INT8 kernels then take another path
# (u8 x s8 pairs summed in saturating 16-bit, vpmaddubsw) than on the AVX-512 VNNI / AMX machines we develop
# on: issue 15. Before the tests, one emulated run checks that the emulation really changes that: torch must
# report AVX2 and ORT's MatMulInteger of 255 x 127 pairs must saturate (it is exact with VNNI). Emulation is
# slow: importing torch + onnxruntime alone takes ~40 s of an idle core, and the selection trains the `tiny`
# fixture emulated; on a shared machine give it an hour or more.
set -euo pipefail

if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    echo "error: qemu-x86_64 not found; install Debian/Ubuntu's user-mode QEMU: sudo apt-get install qemu-user" >&2
    exit 2
fi
PY=$(command -v "${PYTHON:-python}") || { echo "error: no python interpreter ${PYTHON:-python} on PATH" >&2; exit 2; }
if [ $# -eq 0 ]; then
    set -- tests/test_export_int8.py tests/test_verify.py tests/test_export_onnx.py
fi

# TCG lacks some of Haswell's system features (pcid, x2apic, TSX...) and says so once per thread: not our business.
emulate() {
    qemu-x86_64 -cpu Haswell "$PY" "$@" 2> >(grep -v "TCG doesn't support requested feature" >&2)
}

echo "checking the emulated CPU (~1 minute)..."
emulate - <<'EOF'
import sys

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

k = 64
graph = helper.make_graph(
    [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
    "vnni_probe",
    [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
    [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
    [helper.make_tensor("b", TensorProto.INT8, [k, 1], [127] * k)],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
y = int(session.run(None, {"a": np.full((1, k), 255, np.uint8)})[0][0, 0])
capability = torch.backends.cpu.get_cpu_capability()
# Without VNNI each adjacent u8*s8 pair sums into a saturating int16: 32767 per pair instead of 2 * 255 * 127.
path = {255 * 127 * k: "exact (VNNI/AMX kernels)", 32767 * k // 2: "saturated (AVX2 kernels, no VNNI)"}.get(y, f"{y}?")
print(f"torch CPU capability: {capability}; onnxruntime {ort.__version__} u8s8 MatMulInteger: {path}")
if capability != "AVX2" or y != 32767 * k // 2:
    sys.exit("error: the emulated CPU does not take the AVX2 (no VNNI) paths; is this qemu too old for -cpu Haswell?")
EOF

start=$(date +%s)
status=0
emulate -m pytest -q "$@" || status=$?
echo "under qemu-x86_64 -cpu Haswell: pytest exit $status after $(($(date +%s) - start)) s"
exit $status
