"""RotateAttentionValuesPass: orthogonal rotations around each attention's ``context = P @ V`` (exact in float).

The context MatMul's two inputs are quantized per tensor like any other, and at 4 bits both lose: the
probabilities ``P`` are peaky (a few large values per row, the rest rounded to zero) and the values
``V`` carry channel outliers. Two rotations leave the product unchanged:

- along the keys (``N``): ``P @ V == (P R_N) @ (R_N^T V)`` -- the rotated rows of ``P`` are no longer
  peaky, so one grid holds them far better;
- along the head dimension (``d``): ``P @ V == ((P @ (V R_d)) R_d^T)`` -- the outlier channels of ``V``
  are spread as for a Linear's input (:mod:`qdeploy.graph.passes.rotate_inputs`).

The context MatMul then reads ``P R_N`` and ``R_N^T V R_d`` (what the activation Q/DQ go on), and one
``MatMul(., R_d^T)`` after it restores the output. All inserted MatMuls are float ops named like the
Linear rotations (:func:`qdeploy.graph.passes.rotate_inputs.is_rotation`), so selection skips them.
``N`` and ``d`` must be static (from the graph's shapes or shape inference); an axis that is not is left
unrotated. The ``R`` are randomized Hadamard (or seeded orthogonal) matrices shared per size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet, add_initializer
from qdeploy.graph.passes.rotate_inputs import ROTATION_SUFFIX, is_rotation, rotation_matrix
from qdeploy.graph.passes.shift_qk import _LastDims, find_attention

__all__ = ["RotateAttentionValuesPass"]


class RotateAttentionValuesPass(ir.passes.InPlacePass):
    """Rotate every attention's probabilities/values (``keys``, ``head_dim``); ``rotated`` names the contexts."""

    def __init__(self, keys: bool = True, head_dim: bool = True, seed: int = 0,
                 select: Callable[[ir.Node], bool] | None = None) -> None:
        super().__init__()
        self.keys, self.head_dim, self.seed, self.select = keys, head_dim, seed, select
        self.rotated: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Insert the rotations in place."""
        self.rotated = []
        graph, names, last = model.graph, NameSet(model.graph), _LastDims(model)
        shared: dict[tuple[int, bool], ir.Value] = {}

        def matrix(size: int, transposed: bool) -> ir.Value:
            if (size, transposed) not in shared:
                r = rotation_matrix(size, self.seed + 7919)  # not the Linears' R: the product must not cancel
                shared[(size, transposed)] = add_initializer(
                    graph, names, f"qdeploy_attention_rotation_{size}{'_t' if transposed else ''}",
                    np.ascontiguousarray(r.T if transposed else r))
            return shared[(size, transposed)]

        for match in find_attention(model):
            context = match.context
            if self.select is not None and not self.select(context):
                continue  # a context MatMul left float keeps its float inputs
            if is_rotation(context) or any(v is not None and v.producer() is not None and is_rotation(v.producer())  # type: ignore[arg-type]
                   for v in context.inputs):
                continue  # rotated already: the pass is idempotent
            n, d = last(match.softmax.outputs[0]), last(context.inputs[1])  # type: ignore[arg-type]
            rotate_n = self.keys and isinstance(n, int) and n >= 2
            rotate_d = self.head_dim and isinstance(d, int) and d >= 2
            if rotate_n or rotate_d:
                self._rewrite(graph, names, context, n if rotate_n else None, d if rotate_d else None, matrix)
        return ir.passes.PassResult(model, modified=bool(self.rotated))

    def _rewrite(self, graph: ir.Graph, names: NameSet, context: ir.Node, n: int | None, d: int | None,
                 make: Callable[[int, bool], ir.Value]) -> None:
        if not context.name:
            context.name = names.fresh("attention_context")
        base = context.name
        p, v = context.inputs[0], context.inputs[1]
        before: list[ir.Node] = []
        if n is not None:
            before.append(self._node(names, base, "MatMul", [p, make(n, False)], p))
            p = before[-1].outputs[0]
            before.append(self._node(names, base, "MatMul", [make(n, True), v], v))
            v = before[-1].outputs[0]
        if d is not None:
            before.append(self._node(names, base, "MatMul", [v, make(d, False)], v))
            v = before[-1].outputs[0]
        graph.insert_before(context, before)
        context.replace_input_with(0, p)
        context.replace_input_with(1, v)
        if d is not None:  # restore the output: every reader now reads MatMul(context, R_d^T)
            out = context.outputs[0]
            after = self._node(names, base, "MatMul", [out, make(d, True)], out)
            for use in list(out.uses()):
                if use.node is not after:
                    use.node.replace_input_with(use.idx, after.outputs[0])
            if out.is_graph_output():
                graph.outputs[list(graph.outputs).index(out)] = after.outputs[0]
                after.outputs[0].name, out.name = out.name, names.fresh(f"{out.name}_rotated")
            graph.insert_after(context, after)
        self.rotated.append(base)

    @staticmethod
    def _node(names: NameSet, base: str, op: str, inputs: list[ir.Value], like: ir.Value) -> ir.Node:
        node = ir.node(op, inputs, name=names.fresh(f"{base}{ROTATION_SUFFIX}"))
        out = node.outputs[0]
        out.name, out.type, out.shape = names.fresh(f"{like.name}_rotated"), like.type, like.shape
        return node
