"""FP16 ONNX graphs with fp32 I/O and an fp32 head and tail, via onnxconverter-common.

Only the convolution trunk goes to float16: the in-graph normalisation before the first Conv (a
Sub/Div on [0, 1] pixels), and everything after the trunk (pooling, the BNNeck BatchNormalization,
any L2 normalisation: the embedding itself) stay fp32. The trunk includes the residual Add/Relu
right after the last convolution, which TensorRT fuses into it.
"""

from __future__ import annotations

import warnings

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


def _unshare_initializers(graph: onnx.GraphProto, keep: set[str]) -> None:
    """Give fp32 nodes their own copy of an initializer an fp16 node also reads.

    onnxconverter-common keeps such an initializer fp32 for both, which leaves the fp16 node with
    mixed input types (onnxsim merges equal constants, e.g. an untrained BNNeck's zero bias with a
    conv's zero bias).
    """
    inits = {i.name: i for i in graph.initializer}
    fp16_reads = {x for n in graph.node if n.name not in keep for x in n.input if x in inits}
    copies: dict[str, str] = {}
    for node in graph.node:
        if node.name not in keep:
            continue
        for k, name in enumerate(node.input):
            if name in fp16_reads:
                if name not in copies:
                    copy = onnx.TensorProto()
                    copy.CopyFrom(inits[name])
                    copy.name = copies[name] = f"{name}__fp32"
                    graph.initializer.append(copy)
                node.input[k] = copies[name]


def _restore_fp32_outputs(graph: onnx.GraphProto, outputs: set[str]) -> None:
    """Drop the Cast to float16 that onnxconverter-common 1.16 puts after an fp32 node producing a graph
    output, despite ``keep_io_types`` (its ``insert_cast16_after_node`` also walks ``graph.output``)."""
    producer = {o: n for n in graph.node for o in n.output}
    for out in graph.output:
        cast = producer.get(out.name)
        if out.name not in outputs or cast is None or cast.op_type != "Cast":
            continue
        if cast.attribute[0].i == onnx.TensorProto.FLOAT16:
            src = producer[cast.input[0]]
            src.output[list(src.output).index(cast.input[0])] = out.name
            graph.node.remove(cast)
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model (changed in place) in float16 with fp32 inputs and outputs, and the nodes kept fp32."""
    from onnxconverter_common import float16

    for i, node in enumerate(model.graph.node):
        if not node.name:  # the block list goes by name
            node.name = f"{node.op_type}_{i}"
    keep = fp32_node_names(model.graph)
    _unshare_initializers(model.graph, set(keep))
    fp32_outputs = {o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    with warnings.catch_warnings():
        # It warns for each weight below float16's smallest normal value, which it rounds as it says.
        warnings.filterwarnings("ignore", message=r".*will be truncated to", category=UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    _restore_fp32_outputs(converted.graph, fp32_outputs)
    return converted, keep
