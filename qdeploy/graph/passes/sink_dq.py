"""SinkDQPass: run Split, MaxPool and nearest Resize on the integer tensor, dequantizing after them.

For a per-tensor ``DequantizeLinear`` these ops commute with dequantization exactly: Split and nearest
Resize copy elements, MaxPool picks the largest code, which is the largest value for a positive scale.
Moving the DQ below them lets ONNX Runtime run them on uint8 and lets their consumers (QLinearConv,
QLinearConcat, ...) read one shared grid instead of requantizing (ORT's Split fusion requires input and
output grids to be equal; with different grids the Split runs in float between a DQ and Qs).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet
from qdeploy.graph.select import constant_array

__all__ = ["SINKABLE_OP_TYPES", "SinkDQPass"]

#: Ops this pass moves a DequantizeLinear below.
SINKABLE_OP_TYPES = frozenset({"Split", "MaxPool", "Resize"})


def _per_tensor_dq(value: ir.Value | None) -> ir.Node | None:
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "DequantizeLinear" or node.domain != "":
        return None
    scale = constant_array(node.inputs[1])
    if scale is None or scale.size != 1 or float(scale.reshape(())) <= 0:
        return None
    return node


class SinkDQPass(ir.passes.InPlacePass):
    """Move the per-tensor DequantizeLinear feeding each named node below it (one DQ per used output).

    Cases: nodes are processed in graph order, so a chain (Split -> MaxPool) sinks all the way and the
    DQs left without consumers are removed; a node not fed by a per-tensor DQ with a positive constant
    scale, or not a Split/MaxPool/Resize, is left alone; a MaxPool's Indices output must be unused; a
    graph output keeps its name on the new DQ output.
    """

    def __init__(self, nodes: Collection[str]) -> None:
        super().__init__()
        self.nodes = frozenset(nodes)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite in place."""
        graph = model.graph
        names = NameSet(graph)
        touched: list[ir.Node] = []
        for node in list(graph):
            if node.name in self.nodes and node.op_type in SINKABLE_OP_TYPES and node.domain == "":
                touched.extend(self._sink(graph, names, node))
        for dq in touched:
            out = dq.outputs[0]
            if dq.graph is not None and not list(out.uses()) and not out.is_graph_output():
                graph.remove(dq, safe=True)
        return ir.passes.PassResult(model, modified=bool(touched))

    @staticmethod
    def _sink(graph: ir.Graph, names: NameSet, node: ir.Node) -> list[ir.Node]:
        """Sink the DQ below ``node``; returns the DQs involved (old and new), empty if nothing changed."""
        dq = _per_tensor_dq(node.inputs[0])
        if dq is None:
            return []
        outputs = [node.outputs[0]] if node.op_type == "MaxPool" else list(node.outputs)
        if node.op_type == "MaxPool" and len(node.outputs) > 1 and list(node.outputs[1].uses()):
            return []
        node.replace_input_with(0, dq.inputs[0])
        zp = dq.inputs[2] if len(dq.inputs) > 2 else None
        int_type = ir.TensorType(ir.DataType.from_numpy(np.asarray(constant_array(zp)).dtype)) \
            if zp is not None else dq.inputs[0].type
        anchor, created = node, [dq]
        for out in outputs:
            uses = list(out.uses())
            out.type = int_type
            base = out.name or node.name or "sunk"
            inputs = [out, dq.inputs[1]] if zp is None else [out, dq.inputs[1], zp]
            new_dq = ir.node("DequantizeLinear", inputs, name=names.fresh(f"{base}_DequantizeLinear"))
            result = new_dq.outputs[0]
            result.name, result.type, result.shape = names.fresh(f"{base}_dequantized"), ir.TensorType(
                ir.DataType.FLOAT), out.shape
            graph.insert_after(anchor, new_dq)
            anchor = new_dq
            created.append(new_dq)
            for use in uses:
                use.node.replace_input_with(use.idx, result)
            if out.is_graph_output():
                _move_output(graph, names, out, result)
        return created


def _move_output(graph: ir.Graph, names: NameSet, old: ir.Value, new: ir.Value) -> None:
    for i, graph_out in enumerate(graph.outputs):
        if graph_out is old:
            graph.outputs[i] = new
    name = old.name
    old.name = names.fresh(f"{name}_quantized")
    new.name = name
