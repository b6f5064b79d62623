"""SignedConvWeightsPass: symmetric uint8 conv weights (zero point 128) become the same int8 codes (zero point 0).

Why: without VNNI, ONNX Runtime runs a QLinearConv with uint8 weights on its u8u8 kernel, which was no
faster than float Conv on this project's AVX2 machine; with int8 weights it takes the u8s8 kernel
(``vpmaddubsw``), which is faster but adds pairs of products into a saturating int16. This pass only
changes the storage (``q - 128`` with zero point 0 is the same grid and the same dequantized weight, so
it is exact); run :class:`qdeploy.graph.passes.pair_saturation.AvoidPairSaturationPass` after it to make
the int8 codes saturation-free (that step is the one that changes numbers).

Cases: only ``Conv`` with ``group == 1`` whose weight is ``DequantizeLinear(uint8 constant)`` with every
zero point 128 is rewritten (the pair fix knows only that kernel's packing). Depthwise/grouped convs,
MatMul and Gemm keep uint8 weights (u8u8 kernels, no saturation); asymmetric uint8 weights are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet, add_initializer
from qdeploy.graph.select import constant_array

__all__ = ["SignedConvWeightsPass"]

_U8_MIDPOINT = 128


class SignedConvWeightsPass(ir.passes.InPlacePass):
    """Store each group-1 Conv's symmetric uint8 weight as int8 (exact); ``convs_changed`` counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.convs_changed = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite the weight DQs in place."""
        self.convs_changed = 0
        names = NameSet(model.graph)
        for node in model.graph:
            if node.op_type != "Conv" or node.domain != "" or node.attributes.get_int("group", 1) != 1:
                continue
            dq = node.inputs[1].producer() if len(node.inputs) > 1 and node.inputs[1] is not None else None
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.domain == "":
                self.convs_changed += self._sign(model.graph, names, dq)
        return ir.passes.PassResult(model, modified=self.convs_changed > 0)

    @staticmethod
    def _sign(graph: ir.Graph, names: NameSet, dq: ir.Node) -> int:
        weight = dq.inputs[0]
        q = constant_array(weight)
        zp = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
        if q is None or zp is None or q.dtype != np.uint8 or np.any(zp != _U8_MIDPOINT) or weight.const_value is None:
            return 0
        if len(weight.uses()) != 1:  # a shared weight would change for its other readers too
            return 0
        signed = (q.astype(np.int16) - _U8_MIDPOINT).astype(np.int8)
        weight.const_value = ir.tensor(np.ascontiguousarray(signed), name=weight.name)
        weight.type = ir.TensorType(ir.DataType.INT8)
        zero = add_initializer(graph, names, f"{weight.name}_zero_point_s8", np.zeros(zp.shape, np.int8))
        dq.replace_input_with(2, zero)
        return 1
