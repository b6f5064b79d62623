"""QuantizeBiasPass: float bias -> int32 initializer + DequantizeLinear (scale = act_scale * w_scale)."""

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
from qdeploy.graph.select import NodeFilter, bias_slot, constant_array, select_nodes

__all__ = ["BiasQuantizer", "QuantizeBiasPass"]

#: ``(float bias, activation scale, weight scale(s)) -> (int32 bias, parameters)`` or None to keep it float.
BiasQuantizer = Callable[[np.ndarray, float, np.ndarray], "tuple[np.ndarray, QParamsLike] | None"]


def _dq_scale(value: ir.Value | None) -> np.ndarray | None:
    """The constant scale of the DequantizeLinear producing ``value`` (None if not a DQ)."""
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != "DequantizeLinear" or producer.domain != "":
        return None
    return constant_array(producer.inputs[1])


class QuantizeBiasPass(ir.passes.InPlacePass):
    """Give each selected Conv/ConvTranspose/Gemm an int32 bias behind a DequantizeLinear.

    An int32 bias with scale ``act_scale * w_scale`` (the accumulator scale) and zero point 0 is the form
    ORT's QDQ selectors were written for (DQ on every input of DQ -> Conv -> Q); ORT 1.31 also accepts a
    float bias and quantizes it itself (measured: same QLinearConv count, same SQNR to 0.01 dB), older
    releases do not, so the explicit int32 bias is the portable choice. TensorRT wants a float bias, so
    its pipeline skips this pass. Run it after :class:`QuantizeWeightsPass` and
    :class:`InsertActivationQDQPass`: it reads both scales from the DQ nodes they inserted.

    Cases:
      - activation input or weight not fed by a DQ -> bias left float;
      - per-channel weight scales -> per-channel bias scale along axis 0; per-tensor -> scalar;
      - ``quantizer`` returns None (int32 overflow) -> bias left float;
      - the activation DQ must be per-tensor (a per-channel activation scale has no single product).
    """

    def __init__(self, node_filter: NodeFilter, quantizer: BiasQuantizer) -> None:
        super().__init__()
        self.node_filter = node_filter
        self.quantizer = quantizer

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite the biases in place."""
        graph = model.graph
        names = NameSet(graph)
        modified = False
        for node in select_nodes(graph, self.node_filter):
            index = bias_slot(node)
            act_scale, w_scale = _dq_scale(node.inputs[0]), _dq_scale(node.inputs[1])
            if index is None or act_scale is None or w_scale is None or act_scale.size != 1:
                continue
            bias = node.inputs[index]
            array = constant_array(bias)
            if bias is None or array is None or not np.issubdtype(array.dtype, np.floating):
                continue
            result = self.quantizer(array, float(act_scale.reshape(())), w_scale)
            if result is None:
                continue
            q, qp = result
            base = bias.name or "bias"
            q_value = add_initializer(graph, names, f"{base}_quantized", q)
            scale, zp = param_values(graph, names, base, qp)
            dq = make_dequantize(names, q_value, scale, zp, qp, base)
            place_at_start(graph, [dq], bias.producer())
            node.replace_input_with(index, dq.outputs[0])
            modified = True
        return ir.passes.PassResult(model, modified=modified)
