"""plan_integer_region: which ops join the integer region, on the gated test nets and hand-made graphs."""

from __future__ import annotations

from gated_models import cca_net, esa_net, pixel_attention_net, transformer_block
from qdq_models import from_text

from qdeploy.graph.passes import NameGraphPass
from qdeploy.graph.passes.integer_region import (
    SIGMOID_RANGE,
    inferred_shapes,
    is_pooled,
    plan_integer_region,
    pooled_convs,
)
from qdeploy.graph.select import NodeFilter

CONVS = NodeFilter(("Conv", "MatMul", "Gemm"))


def _plan(model, matches=CONVS.matches):
    NameGraphPass()(model)
    shapes = inferred_shapes(model)
    return model, plan_integer_region(model.graph, matches, shapes), shapes


def _ops(model, names) -> list[str]:
    by_name = {n.name: n.op_type for n in model.graph}
    return sorted(by_name[n] for n in names)


def test_cca_pooled_branch_stays_float_and_gate_is_fixed() -> None:
    model, _, shapes = _plan(cca_net())
    pooled = pooled_convs(model.graph, CONVS.matches, shapes)
    assert sorted(pooled) == ["/down/Conv", "/up/Conv"]
    keep = NodeFilter(CONVS.op_types, exclude_nodes=tuple(f"^{n}$" for n in pooled))
    _, plan, _ = _plan(model, keep.matches)
    assert _ops(model, plan.qlinear) == ["Add", "Concat", "LeakyRelu", "Mul"]  # not the pooled Sigmoid
    assert _ops(model, plan.pass_through) == ["Split"]
    producers = {out.name: n.op_type for n in model.graph for out in n.outputs}
    assert [(producers[t], r) for t, r in plan.fixed.items()] == [("Sigmoid", SIGMOID_RANGE)]
    assert not set(plan.tensors) & plan.aliases


def test_pixel_attention_and_esa_members() -> None:
    model, plan, _ = _plan(pixel_attention_net())
    assert _ops(model, plan.qlinear) == ["Add", "Concat", "LeakyRelu", "LeakyRelu", "LeakyRelu", "Mul", "Sigmoid"]
    assert _ops(model, plan.pass_through) == ["Resize"]  # nearest
    model, plan, _ = _plan(esa_net())
    assert _ops(model, plan.pass_through) == ["MaxPool"]  # the linear Resize stays float ...
    assert "Add" not in _ops(model, plan.qlinear)  # ... and so does the Add it feeds


def test_transformer_block_gets_nothing() -> None:
    _, plan, _ = _plan(transformer_block())
    assert plan.qlinear == () and plan.pass_through == () and plan.tensors == ()


GRAPH = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y, float[1, 2, 4, 4] z)
<float[2, 2, 1, 1] w = {1, 0, 0, 1}, float[4] gamma = {1, 1, 1, 1}>
{
  a = Conv(x, w)
  b = Conv(x, w)
  s = Add(a, b)
  r = Relu(s)
  c = Conv(r, w)
  t = Mul(a, b)
  y = Sigmoid(c)
  z = LayerNormalization(t, gamma)
}"""


def test_relu_folds_into_an_add_and_float_consumers_block_a_mul() -> None:
    model, plan, _ = _plan(from_text(GRAPH))
    assert _ops(model, plan.qlinear) == ["Add"]  # the Mul feeds LayerNorm; the Sigmoid is the graph output
    assert plan.tensors == ("r",)  # quantized after the Relu, like a conv's output
    assert plan.fixed == {} and plan.pass_through == ()


def test_is_pooled() -> None:
    model = from_text("""<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3, 5, 5] x) => (float[1, 3, 1, 1] m) { m = ReduceMean <axes = [2, 3]> (x) }""")
    shapes = inferred_shapes(model)
    assert not is_pooled(model.graph.inputs[0])
    assert is_pooled(model.graph.outputs[0], shapes)
