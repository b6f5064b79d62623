"""ExposeTensorsPass: make intermediate tensors graph outputs so a runtime returns them for calibration."""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from qdeploy.errors import InputError
from qdeploy.graph.select import constant_array, find_value

__all__ = ["ExposeTensorsPass"]


class ExposeTensorsPass(ir.passes.FunctionalPass):
    """Return a copy of the model whose outputs are the original outputs followed by ``names``.

    Calibration needs the values of activations that are not model outputs; appending them as outputs lets
    one ONNX Runtime session produce everything in a single run, with the original outputs still first (so
    ``outputs[:k]`` code keeps working).

    Cases:
      - a name that already is a graph output is not added twice;
      - a graph input may be exposed (it is appended as an output as is);
      - an intermediate without a known type triggers ONNX shape inference, because graph outputs must be
        typed; a value still untyped after that is added as is (ONNX Runtime infers output types itself);
      - an unknown name, an empty name, or a constant (initializer / Constant output) raises
        :class:`InputError` naming it.
    """

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(dict.fromkeys(names))

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Clone ``model`` and append the requested values to its outputs."""
        model = model.clone()
        graph = model.graph
        values = [self._lookup(graph, name) for name in self.names]
        if any(v.type is None for v in values):
            model = ShapeInferencePass()(model).model
            graph = model.graph
            values = [self._lookup(graph, name) for name in self.names]
        present = {v.name for v in graph.outputs}
        added = False
        for value in values:
            if value.name not in present:
                graph.outputs.append(value)
                present.add(value.name)
                added = True
        return ir.passes.PassResult(model, modified=added)

    @staticmethod
    def _lookup(graph: ir.Graph, name: str) -> ir.Value:
        value = find_value(graph, name) if name else None
        if value is None:
            sample = [out.name for node in graph for out in node.outputs if out.name][:8]
            raise InputError(f"tensor {name!r} is not in the model",
                             f"use a tensor name from the graph (for example: {', '.join(sample)})")
        if constant_array(value) is not None:
            raise InputError(f"tensor {name!r} is a constant, not an activation",
                             "constants need no calibration; pass only run-time tensors")
        return value
