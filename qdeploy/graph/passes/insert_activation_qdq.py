"""InsertActivationQDQPass: a QuantizeLinear -> DequantizeLinear pair on each calibrated activation."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import onnx_ir as ir

from qdeploy.errors import InputError
from qdeploy.graph.passes._qdq import NameSet, QParamsLike, make_dequantize, make_quantize, param_values, \
    place_at_start
from qdeploy.graph.select import constant_array

__all__ = ["InsertActivationQDQPass"]


class InsertActivationQDQPass(ir.passes.InPlacePass):
    """Insert ``x -> Q -> DQ -> consumers`` for every tensor named in ``params``.

    The pair is what both ORT and TensorRT read as "this tensor is int8 with this scale": ORT fuses
    DQ -> op -> Q into integer kernels, TensorRT folds the pairs into its int8 engine.

    Cases:
      - ``consumers=None`` (ORT style): one shared pair per tensor; *every* use is rewired, including a
        graph output, which then keeps its name on the DQ output (the float tensor becomes
        ``<name>_prequant``). Sharing is required for ORT's fusion: Conv's output must feed only the Q;
      - ``consumers`` = node names (TensorRT style): only uses by those nodes are rewired; float consumers
        such as a residual Add keep the unquantized tensor;
      - a graph input is quantized with the pair placed first in the graph;
      - a tensor with no matching use is skipped; an unknown or constant name raises :class:`InputError`.
    """

    def __init__(self, params: Mapping[str, QParamsLike], consumers: Collection[str] | None = None) -> None:
        super().__init__()
        self.params = dict(params)
        self.consumers = None if consumers is None else frozenset(consumers)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Insert the pairs in place."""
        graph = model.graph
        names = NameSet(graph)
        values = {v.name: v for v in graph.inputs}
        values.update((out.name, out) for node in graph for out in node.outputs)
        modified = False
        for name, qp in self.params.items():
            value = values.get(name)
            if value is None or constant_array(value) is not None:
                what = "not in the model" if value is None else "a constant"
                raise InputError(f"cannot quantize activation {name!r}: it is {what}",
                                 "compute ranges for run-time tensors of this model "
                                 "(see tensors_to_calibrate)")
            modified |= self._insert(graph, names, value, qp)
        return ir.passes.PassResult(model, modified=modified)

    def _insert(self, graph: ir.Graph, names: NameSet, value: ir.Value, qp: QParamsLike) -> bool:
        uses = [u for u in value.uses() if self.consumers is None or u.node.name in self.consumers]
        as_output = self.consumers is None and value.is_graph_output()
        if not uses and not as_output:
            return False
        base = value.name or "tensor"
        scale, zp = param_values(graph, names, base, qp)
        q = make_quantize(names, value, scale, zp, qp, base)
        dq = make_dequantize(names, q.outputs[0], scale, zp, qp, base)
        dq.outputs[0].shape = value.shape
        place_at_start(graph, [q, dq], value.producer())
        for use in uses:
            use.node.replace_input_with(use.idx, dq.outputs[0])
        if as_output:
            out = dq.outputs[0]
            for i, graph_out in enumerate(graph.outputs):
                if graph_out is value:
                    graph.outputs[i] = out
            value.name = names.fresh(f"{base}_prequant")
            out.name = base
            out.type = value.type
        return True
