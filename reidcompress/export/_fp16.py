"""FP16 ONNX graphs with fp32 I/O and an fp32 head and tail, via onnxconverter-common.

Only the convolution trunk goes to float16: the in-graph normalisation before the first Conv (a
Sub/Div on [0, 1] pixels), and everything after the trunk (pooling, the BNNeck BatchNormalization,
any L2 normalisation: the embedding itself) stay fp32. The trunk includes the residual Add/Relu
right after the last convolution, which TensorRT fuses into it.
"""

from __future__ import annotations

import onnx

__all__ = ["fp32_node_names", "to_fp16"]

_EPILOGUE = frozenset({"Add", "Relu"})


def _closure(nodes: list[onnx.NodeProto], start: set[int], forward: bool) -> set[int]:
    """Indices of ``start`` and every node downstream (``forward``) or upstream of them."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            if name in producer:
                consumers.setdefault(producer[name], []).append(i)
    seen, todo = set(start), list(start)
    while todo:
        i = todo.pop()
        nxt = consumers.get(i, []) if forward else [producer[x] for x in nodes[i].input if x in producer]
        for j in nxt:
            if j not in seen:
                seen.add(j)
                todo.append(j)
    return seen


def fp32_node_names(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes outside the convolution trunk (all of them when there is no Conv)."""
    nodes = list(graph.node)
    convs = {i for i, n in enumerate(nodes) if n.op_type == "Conv"}
    trunk = _closure(nodes, convs, True) & _closure(nodes, convs, False)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    for i, n in enumerate(nodes):  # ONNX graphs are topologically sorted
        inputs = [producer[x] for x in n.input if x in producer]
        if i not in trunk and n.op_type in _EPILOGUE and inputs and all(j in trunk for j in inputs):
            trunk.add(i)
    return [n.name for i, n in enumerate(nodes) if i not in trunk]


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model in float16 with fp32 inputs and outputs, and the names of the nodes kept in fp32."""
    from onnxconverter_common import float16

    for i, node in enumerate(model.graph.node):
        if not node.name:  # the block list goes by name
            node.name = f"{node.op_type}_{i}"
    keep = fp32_node_names(model.graph)
    converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    return converted, keep
