"""CleanupGraphPass / NameGraphPass: dead code removed, topological order restored, names given."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from qdq_models import check_onnx, from_text, run

from qdeploy.graph.passes import CleanupGraphPass, NameGraphPass

UNSORTED_WITH_DEAD = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2] x) => (float[2] y) <float[2] unused_w = {1.0, 2.0}> {
  t = Relu (x)
  y = Neg (t)
  dead = Abs (x)
}
"""


def test_removes_dead_code_and_sorts() -> None:
    model = from_text(UNSORTED_WITH_DEAD)
    graph = model.graph
    relu, neg = graph[0], graph[1]
    graph.remove(relu)
    graph.insert_after(neg, relu)  # now Neg comes before its producer
    assert CleanupGraphPass()(model).modified
    assert [n.op_type for n in model.graph] == ["Relu", "Neg"]
    assert "unused_w" not in model.graph.initializers
    check_onnx(model)
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(run(model, {"x": x})["y"], [0.0, -2.0])
    assert CleanupGraphPass()(model).modified is False


def test_names_anonymous_nodes() -> None:
    model = from_text(UNSORTED_WITH_DEAD)
    assert all(not n.name for n in model.graph)
    NameGraphPass()(model)
    names = [n.name for n in model.graph]
    assert all(names) and len(set(names)) == len(names)
    assert isinstance(model, ir.Model)
