"""Cleanup passes wrapping onnx_ir's common passes (names, dead code, order)."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, RemoveUnusedNodesPass, TopologicalSortPass

__all__ = ["CleanupGraphPass", "NameGraphPass"]


class NameGraphPass(ir.passes.InPlacePass):
    """Give every node and value a unique, non-empty name.

    The quantization passes select nodes by name regex and refer to tensors by name (ranges are keyed by
    tensor name), so anonymous nodes from some exporters must be named first. Wraps ``NameFixPass``.

    Cases: already-unique names are kept; empty names get generated ones; duplicates are renamed.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Run ``NameFixPass`` in place."""
        return NameFixPass()(model)


class CleanupGraphPass(ir.passes.InPlacePass):
    """Remove dead nodes and unused initializers, then sort topologically.

    Rewrites leave orphans behind (a float weight replaced by its quantized copy, a Q whose DQ was removed)
    and insert nodes next to producers rather than in global order; ONNX requires topological order.

    Cases: unused nodes/initializers are removed; graph outputs and their producers are kept; a graph
    already clean and sorted reports ``modified=False``.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Run ``RemoveUnusedNodesPass`` then ``TopologicalSortPass`` in place."""
        removed = RemoveUnusedNodesPass()(model).modified
        sorted_ = TopologicalSortPass()(model).modified
        return ir.passes.PassResult(model, modified=removed or sorted_)
