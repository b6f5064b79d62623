"""DedicateQDQPass: one Q -> DQ pair per consumer (TensorRT's preferred QDQ placement)."""

from __future__ import annotations

import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet
from qdeploy.graph.select import constant_array

__all__ = ["DedicateQDQPass"]


class DedicateQDQPass(ir.passes.InPlacePass):
    """Split every shared activation Q -> DQ pair so that each consumer has its own pair.

    TensorRT fuses a DQ into the op that consumes it; a DQ with two consumers (say two convs reading one
    tensor) forces it to keep an explicit int8 -> float reformat. NVIDIA's QDQ placement guidance (and
    ORT's ``DedicatedQDQPair`` option) therefore give each consumer identical, private Q and DQ nodes.
    The copies share the scale/zero-point initializers.

    Cases:
      - a DQ used by one node (or only by a graph output) is left alone;
      - a DQ used by k uses gets k-1 new pairs; the first use keeps the original, a graph output always
        keeps the original (so output names do not change);
      - weight DQs (constant integer input, no Q) are not touched: sharing a weight DQ is free.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Split shared pairs in place."""
        graph = model.graph
        names = NameSet(graph)
        modified = False
        for dq in [n for n in graph if n.op_type == "DequantizeLinear" and n.domain == ""]:
            q = dq.inputs[0].producer() if dq.inputs[0] is not None else None
            if q is None or q.op_type != "QuantizeLinear" or constant_array(q.inputs[0]) is not None:
                continue
            uses = list(dq.outputs[0].uses())
            keep = 0 if dq.outputs[0].is_graph_output() else 1
            for use in uses[keep:]:
                new_q = self._copy(q, names)
                new_dq = self._copy(dq, names, new_q.outputs[0])
                graph.insert_after(dq, [new_q, new_dq])
                use.node.replace_input_with(use.idx, new_dq.outputs[0])
                modified = True
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _copy(node: ir.Node, names: NameSet, first: ir.Value | None = None) -> ir.Node:
        inputs = [first if (i == 0 and first is not None) else v for i, v in enumerate(node.inputs)]
        attrs = {k: a.value for k, a in node.attributes.items()}
        new = ir.node(node.op_type, inputs, attrs, name=names.fresh(node.name or node.op_type))
        out, old = new.outputs[0], node.outputs[0]
        out.name = names.fresh(old.name or "qdq")
        out.type, out.shape = old.type, old.shape
        return new
