"""``to_float16``: run a model's float math in FP16 while keeping float32 inputs and outputs.

Why an ONNX rewrite: TensorRT-RTX (and TensorRT in strongly typed mode) takes every layer's precision
from the tensor types in the network; there is no "FP16 allowed" builder flag to flip. So FP16 (and
"best" = INT8 where quantized + FP16 elsewhere) means handing the parser a graph whose float tensors
*are* float16. The engine keeps float32 I/O (Cast at the boundaries) so callers feed the same arrays.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

__all__ = ["KEEP_FLOAT32_SLOTS", "QDQ_FP16_OPSET", "to_float16"]

#: (op type, input index) that ONNX requires to stay float32 (Resize roi/scales, Upsample scales).
KEEP_FLOAT32_SLOTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})

#: float16 Q/DQ scales (so that DQ outputs float16) exist from opset 19.
QDQ_FP16_OPSET = 19

_F32, _F16 = ir.DataType.FLOAT, ir.DataType.FLOAT16


def _is_f32(value: ir.Value | None) -> bool:
    return value is not None and value.type is not None and value.dtype == _F32


def _keep(node: ir.Node, index: int) -> bool:
    return node.domain == "" and (node.op_type, index) in KEEP_FLOAT32_SLOTS


def _cast(value: ir.Value, to: ir.DataType, name: str) -> ir.Node:
    node = ir.node("Cast", [value], {"to": to}, name=f"{name}_Cast")
    node.outputs[0].name = name
    node.outputs[0].type = ir.TensorType(to)
    node.outputs[0].shape = value.shape
    return node


def to_float16(model: ir.Model) -> ir.Model:
    """A copy of ``model`` with float32 constants, casts and intermediate tensors turned into float16.

    Cases:
      - graph inputs/outputs stay float32: a Cast after each float input and before each float output;
      - float initializers and ``Constant`` values become float16, except where ONNX requires float32
        (:data:`KEEP_FLOAT32_SLOTS`); an initializer used in both kinds of slot stays float32 and gets
        a Cast for its float16 uses;
      - ``Cast(to=FLOAT)`` becomes ``Cast(to=FLOAT16)``, ConstantOfShape's float value likewise;
      - a QDQ model gets float16 scales (DequantizeLinear then outputs float16) and its opset is raised to
        :data:`QDQ_FP16_OPSET` where lower (18 -> 19 changes no semantics a QDQ conv net uses);
      - integer tensors (weights, shapes, indices) are untouched.
    """
    model = model.clone()
    graph = model.graph
    qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.domain == "" for n in graph)
    if qdq and model.opset_imports.get("", 0) < QDQ_FP16_OPSET:
        model.opset_imports[""] = QDQ_FP16_OPSET
        graph.opset_imports[""] = QDQ_FP16_OPSET
    _convert_constants(graph)
    for node in list(graph):
        _convert_node(graph, node)
    _cast_inputs(graph)
    _cast_outputs(graph)
    _guard_float32_slots(graph)
    return model


def _convert_constants(graph: ir.Graph) -> None:
    for value in list(graph.initializers.values()):
        if not _is_f32(value) or value.const_value is None or value.is_graph_input():
            continue
        uses = list(value.uses())
        if any(_keep(u.node, u.idx) for u in uses):
            continue  # _guard_float32_slots handles mixed use by casting the float16 consumers' copy
        array = value.const_value.numpy().astype(np.float16)
        value.const_value = ir.tensor(array, name=value.name)
        value.type = ir.TensorType(_F16)


def _convert_node(graph: ir.Graph, node: ir.Node) -> None:
    if node.domain != "":
        return
    if node.op_type == "Constant":
        attr = node.attributes.get("value")
        out = node.outputs[0]
        if (
            attr is not None
            and attr.type == ir.AttributeType.TENSOR
            and attr.as_tensor().dtype == _F32
            and not any(_keep(u.node, u.idx) for u in out.uses())
        ):
            node.attributes["value"] = ir.AttrTensor(
                "value", ir.tensor(attr.as_tensor().numpy().astype(np.float16))
            )
            out.type = ir.TensorType(_F16)
        return
    if node.op_type == "Cast" and node.attributes.get_int("to", 0) == _F32:
        node.attributes["to"] = ir.AttrInt64("to", int(_F16))
    if node.op_type == "ConstantOfShape":
        attr = node.attributes.get("value")
        if attr is not None and attr.as_tensor().dtype == _F32:
            node.attributes["value"] = ir.AttrTensor(
                "value", ir.tensor(attr.as_tensor().numpy().astype(np.float16))
            )
    for out in node.outputs:
        if _is_f32(out):
            out.type = ir.TensorType(_F16)


def _cast_inputs(graph: ir.Graph) -> None:
    for value in graph.inputs:
        if not _is_f32(value):
            continue
        uses = [u for u in value.uses() if not _keep(u.node, u.idx)]
        if not uses:
            continue
        cast = _cast(value, _F16, f"{value.name}_fp16")
        if len(graph):
            graph.insert_before(graph[0], [cast])
        else:
            graph.append(cast)
        for use in uses:
            use.node.replace_input_with(use.idx, cast.outputs[0])


def _cast_outputs(graph: ir.Graph) -> None:
    for i, value in enumerate(list(graph.outputs)):
        if value.dtype != _F16 or value.is_graph_input():
            continue
        name = value.name or f"output_{i}"
        value.name = f"{name}_fp16"
        cast = _cast(value, _F32, name)
        graph.append(cast)
        graph.outputs[i] = cast.outputs[0]


def _guard_float32_slots(graph: ir.Graph) -> None:
    """Cast float16 values back to float32 where ONNX insists on float32 (and a float32 constant shared
    with float16 consumers down to float16 for those consumers)."""
    for node in list(graph):
        for index, value in enumerate(node.inputs):
            if value is None or value.type is None:
                continue
            if _keep(node, index) and value.dtype == _F16:
                cast = _cast(value, _F32, f"{value.name}_fp32_{node.name or node.op_type}")
                graph.insert_before(node, [cast])
                node.replace_input_with(index, cast.outputs[0])
            elif (
                not _keep(node, index)
                and value.dtype == _F32
                and value.const_value is not None
                and node.op_type != "Cast"
            ):
                cast = _cast(value, _F16, f"{value.name}_fp16_{node.name or node.op_type}")
                graph.insert_before(node, [cast])
                node.replace_input_with(index, cast.outputs[0])
