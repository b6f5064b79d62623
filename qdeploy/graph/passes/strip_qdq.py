"""StripQDQPass: remove QuantizeLinear/DequantizeLinear to get a float graph back (for debugging)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet, add_initializer
from qdeploy.graph.select import constant_array

__all__ = ["StripQDQPass"]


class StripQDQPass(ir.passes.InPlacePass):
    """Remove every Q -> DQ pair and fold every weight DQ into a float initializer.

    Useful to isolate error sources: ``Strip(quantized)`` keeps only the *weight* rounding (weights become
    their dequantized values) and drops all activation quantization; stripping a model that had only
    activation pairs restores it exactly.

    Cases:
      - ``Q -> DQ`` on a run-time tensor: consumers read the float input again, both nodes go away;
      - ``DQ(constant int)`` (weights, int32 bias): replaced by a float32 initializer ``(q - zp) * scale``;
      - a DQ output that is a graph output: the float tensor takes over the output and its name;
      - a lone Q without DQ is kept (its consumer really needs integers).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Strip in place; dead Q nodes and initializers are removed here too."""
        graph = model.graph
        names = NameSet(graph)
        modified = False
        for dq in [n for n in graph if n.op_type == "DequantizeLinear" and n.domain == ""]:
            replacement = self._float_source(graph, names, dq)
            if replacement is None:
                continue
            out = dq.outputs[0]
            out_name = out.name
            is_output = out.is_graph_output()
            out.replace_all_uses_with(replacement, replace_graph_outputs=True)
            graph.remove(dq, safe=True)
            if is_output and not replacement.is_graph_input():
                replacement.name = out_name
            modified = True
        for q in [n for n in graph if n.op_type == "QuantizeLinear" and n.domain == ""]:
            if not q.outputs[0].uses() and not q.outputs[0].is_graph_output():
                graph.remove(q, safe=True)
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _float_source(graph: ir.Graph, names: NameSet, dq: ir.Node) -> ir.Value | None:
        src = dq.inputs[0]
        producer = src.producer() if src is not None else None
        if producer is not None and producer.op_type == "QuantizeLinear" and producer.domain == "":
            return producer.inputs[0]
        q = constant_array(src)
        scale = constant_array(dq.inputs[1])
        if q is None or scale is None:
            return None
        zp = constant_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
        zp = np.zeros_like(scale, np.int64) if zp is None else zp.astype(np.int64)
        axis = dq.attributes.get_int("axis", 1) % max(q.ndim, 1)
        if scale.ndim == 1 and q.ndim > 0:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        array = ((q.astype(np.int64) - zp) * scale).astype(np.float32)
        return add_initializer(graph, names, f"{dq.outputs[0].name}_float", array)
