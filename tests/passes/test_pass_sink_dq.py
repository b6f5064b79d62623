"""SinkDQPass: Split, MaxPool and nearest Resize run on the integer tensor, bit-exactly."""

from __future__ import annotations

import numpy as np
from qdq_models import check_onnx, from_text, run

from qdeploy.graph.passes import NameGraphPass, SinkDQPass

_HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'
_PARAMS = "<float s = {0.05}, uint8 z = {10}, int64[2] sizes = {2, 3}, float[4] scales = {1, 1, 2, 2}>"


def _model(body: str, outputs: str) -> str:
    return (_HEADER + f"g (float[1, 5, 6, 6] x) => ({outputs})\n{_PARAMS}\n"
            "{\n  xq = QuantizeLinear(x, s, z)\n  xd = DequantizeLinear(xq, s, z)\n" + body + "\n}")


CHAIN = _model(
    "  a, b = Split <axis = 1> (xd, sizes)\n"
    "  m = MaxPool <kernel_shape = [3, 3], strides = [2, 2]> (a)\n"
    "  r = Resize <mode = \"nearest\"> (b, , scales)\n"
    "  y = Relu(m)",
    "float[1, 2, 2, 2] y, float[1, 3, 12, 12] r",
)


def _named(text: str):
    model = from_text(text)
    NameGraphPass()(model)
    return model, {n.name for n in model.graph if n.op_type in ("Split", "MaxPool", "Resize")}


def test_chain_sinks_and_is_bit_exact() -> None:
    model, names = _named(CHAIN)
    x = {"x": np.random.default_rng(0).uniform(-1, 12, (1, 5, 6, 6)).astype(np.float32)}
    ref = run(model, x)
    assert SinkDQPass(names)(model).modified
    check_onnx(model)
    by_op = {n.op_type: n for n in model.graph}
    assert by_op["Split"].inputs[0].producer().op_type == "QuantizeLinear"
    assert [u.node.op_type for out in by_op["Split"].outputs for u in out.uses()] == ["MaxPool", "Resize"]
    for op in ("MaxPool", "Resize"):  # the chain stays integer; one DQ after each end
        assert [u.node.op_type for u in by_op[op].outputs[0].uses()] == ["DequantizeLinear"], op
    assert [v.name for v in model.graph.outputs] == ["y", "r"]  # the graph output keeps its name on the DQ
    got = run(model, x)
    for name in ("y", "r"):
        np.testing.assert_array_equal(got[name], ref[name])


def test_unlisted_nodes_and_per_channel_dq_are_left_alone() -> None:
    text = (_HEADER + "g (float[1, 2, 4, 4] x) => (float[1, 1, 4, 4] a, float[1, 1, 4, 4] b)\n"
            "<float[2] s = {0.1, 0.2}, uint8[2] z = {0, 0}, int64[2] sizes = {1, 1}>\n"
            "{\n  xq = QuantizeLinear <axis = 1> (x, s, z)\n  xd = DequantizeLinear <axis = 1> (xq, s, z)\n"
            "  a, b = Split <axis = 1> (xd, sizes)\n}")
    model, names = _named(text)
    assert not SinkDQPass(names)(model).modified
    assert not SinkDQPass(set())(_named(CHAIN)[0]).modified
