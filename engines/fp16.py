"""FP32 ONNX generator -> the same graph computing in FP16, with FP32 inputs and outputs.

TensorRT 11 builds only strongly typed networks (its FP16 builder flag is gone): the precision
must be in the graph. Weights and float constants become float16, one Cast follows the input and
one precedes each output, so callers keep feeding and reading float32. Resize's ``roi`` and
``scales`` stay float32, as the operator requires. Needs only the ``onnx`` package.
"""
from __future__ import annotations

import json

import numpy as np

from engines.metadata import KEY

_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16
_KEEP_FLOAT_INPUTS = {"Resize": (1, 2)}  # op -> input positions that must stay float32


def _to_float16(tensor):
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    finite = np.clip(array, -65504.0, 65504.0)  # beyond float16's range, saturate instead of inf
    converted = numpy_helper.from_array(finite.astype(np.float16), tensor.name)
    tensor.CopyFrom(converted)


def graph_precision(model) -> str:
    """'fp16' when the graph's weights are float16, else 'fp32'."""
    return "fp16" if any(init.data_type == _FLOAT16 for init in model.graph.initializer) else "fp32"


def convert(model):
    """A float16 copy of ``model`` (an onnx.ModelProto) with float32 I/O; ``model`` is untouched."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    keep = {node.input[i] for node in graph.node for i in _KEEP_FLOAT_INPUTS.get(node.op_type, ())
            if i < len(node.input) and node.input[i]}
    for init in graph.initializer:
        if init.data_type == _FLOAT and init.name not in keep:
            _to_float16(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] not in keep:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type == _FLOAT:
                    _to_float16(attribute.t)
        elif node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == _FLOAT:
                    attribute.i = _FLOAT16
        elif any(a.name in ("value_float", "value_floats") for a in node.attribute):
            raise ValueError(f"fp16 conversion does not handle node {node.name or node.op_type} ({node.op_type})")

    def rename_inputs(old: str, new: str):
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new

    head, tail = [], []
    for graph_input in graph.input:
        if graph_input.type.tensor_type.elem_type == _FLOAT:
            inner = graph_input.name + "_fp16"
            rename_inputs(graph_input.name, inner)
            head.append(helper.make_node("Cast", [graph_input.name], [inner], to=_FLOAT16,
                                         name=f"cast_{graph_input.name}_to_fp16"))
    for graph_output in graph.output:
        if graph_output.type.tensor_type.elem_type == _FLOAT:
            inner = graph_output.name + "_fp16"
            rename_inputs(graph_output.name, inner)
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == graph_output.name:
                        node.output[i] = inner
            tail.append(helper.make_node("Cast", [inner], [graph_output.name], to=_FLOAT,
                                         name=f"cast_{graph_output.name}_to_fp32"))
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    for entry in model.metadata_props:
        if entry.key == KEY:
            entry.value = json.dumps({**json.loads(entry.value), "precision": "fp16"})
    onnx.checker.check_model(model)
    return model


def convert_file(source, target) -> None:
    """Read an FP32 generator, write its FP16 graph (through a temporary file)."""
    import onnx

    from engines.atomic import atomic_write_bytes

    atomic_write_bytes(target, convert(onnx.load(str(source))).SerializeToString())
