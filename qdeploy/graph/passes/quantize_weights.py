"""QuantizeWeightsPass: constant weights of selected nodes -> integer initializer + DequantizeLinear."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import (
    NameSet,
    QParamsLike,
    add_initializer,
    make_dequantize,
    param_values,
    place_at_start,
)
from qdeploy.graph.select import NodeFilter, constant_array, select_nodes, weight_slot

__all__ = ["QuantizeWeightsPass", "WeightQuantizer"]

#: ``(float weight, per-channel axis or None) -> (integer weight, its parameters)``.
WeightQuantizer = Callable[[np.ndarray, "int | None"], "tuple[np.ndarray, QParamsLike]"]


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Store each selected node's constant weight as integers and feed it through a DequantizeLinear.

    Weights get no QuantizeLinear: they are known ahead of time, so storing the integers directly makes the
    file ~4x smaller and is the form ORT's QDQ fusions and TensorRT both expect (``DQ(int8 initializer)``).
    The per-channel axis comes from :func:`qdeploy.graph.select.weight_slot` (Conv 0, ConvTranspose 1,
    Gemm 0/1 by transB, MatMul last); the numbers come from ``quantizer`` so that this pass holds no
    quantization policy.

    Cases:
      - a weight shared by several selected nodes with the same axis is quantized once and its DQ shared;
      - a weight from a ``Constant`` node is handled like an initializer;
      - non-float weights, nodes without a constant weight, and unselected nodes are left alone;
      - the float initializer is left for :class:`CleanupGraphPass` to remove once unused.
    """

    def __init__(self, node_filter: NodeFilter, quantizer: WeightQuantizer, per_channel: bool = True) -> None:
        super().__init__()
        self.node_filter = node_filter
        self.quantizer = quantizer
        self.per_channel = per_channel

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite the weights of the selected nodes in place."""
        graph = model.graph
        names = NameSet(graph)
        done: dict[tuple[str, int | None], ir.Value] = {}
        modified = False
        for node in select_nodes(graph, self.node_filter):
            slot = weight_slot(node, self.per_channel)
            if slot is None:
                continue
            index, axis = slot
            weight = node.inputs[index]
            array = constant_array(weight)
            if weight is None or array is None or not np.issubdtype(array.dtype, np.floating):
                continue
            key = (weight.name or "", axis)
            if key not in done:
                done[key] = self._dequantized(graph, names, weight, array, axis)
            node.replace_input_with(index, done[key])
            modified = True
        return ir.passes.PassResult(model, modified=modified)

    def _dequantized(self, graph: ir.Graph, names: NameSet, weight: ir.Value, array: np.ndarray,
                     axis: int | None) -> ir.Value:
        q, qp = self.quantizer(array.astype(np.float32), axis)
        base = weight.name or "weight"
        q_value = add_initializer(graph, names, f"{base}_quantized", q)
        scale, zp = param_values(graph, names, base, qp)
        dq = make_dequantize(names, q_value, scale, zp, qp, base)
        place_at_start(graph, [dq], weight.producer())
        return dq.outputs[0]
