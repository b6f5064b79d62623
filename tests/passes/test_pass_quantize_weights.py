"""QuantizeWeightsPass: integer initializers + per-channel DQ on the output-channel axis, per op type."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, conv_net, convtranspose_net, from_text, mlp_net, run

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import CleanupGraphPass, QuantizeWeightsPass
from qdeploy.graph.select import NodeFilter, constant_array
from qdeploy.quant.params import quantize_weight

#: 8-bit per-channel weights alone (float activations) on these tiny nets stay above this.
MIN_WEIGHT_ONLY_SQNR_DB = 35.0


def _quantize(model: ir.Model, node_filter: NodeFilter | None = None, per_channel: bool = True) -> ir.Model:
    model = model.clone()
    QuantizeWeightsPass(node_filter or NodeFilter(), quantize_weight, per_channel)(model)
    CleanupGraphPass()(model)
    return model


def _weight_dq(model: ir.Model, op_type: str) -> ir.Node:
    node = next(n for n in model.graph if n.op_type == op_type)
    index = 0 if constant_array(node.inputs[0]) is not None else 1
    dq = node.inputs[index].producer()
    assert dq is not None and dq.op_type == "DequantizeLinear"
    return dq


def _axis_and_scales(dq: ir.Node) -> tuple[int | None, int]:
    axis = dq.attributes.get_int("axis", None)
    return axis, constant_array(dq.inputs[1]).size


def _assert_close(model: ir.Model, qmodel: ir.Model, feeds: dict[str, np.ndarray]) -> None:
    check_onnx(qmodel)
    ref, out = run(model, feeds)["y"], run(qmodel, feeds)["y"]
    assert sqnr_db(ref, out) >= MIN_WEIGHT_ONLY_SQNR_DB


def test_conv_axis0_int8_initializers() -> None:
    model = conv_net()
    qmodel = _quantize(model)
    dq = _weight_dq(qmodel, "Conv")
    assert _axis_and_scales(dq) == (0, 8)  # one scale per output channel of c1
    assert constant_array(dq.inputs[0]).dtype == np.int8
    assert not any(v.const_value.dtype == ir.DataType.FLOAT and v.const_value.shape.rank() == 4
                   for v in qmodel.graph.initializers.values())  # float weights are gone
    assert "QuantizeLinear" not in [n.op_type for n in qmodel.graph]  # weights get DQ only
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 12, 12)).astype(np.float32)
    _assert_close(model, qmodel, {"x": x})


@pytest.mark.parametrize(("groups", "expected"), [(1, (1, 6)), (2, (None, 1))])
def test_convtranspose_axis1_and_group_fallback(groups: int, expected: tuple[int | None, int]) -> None:
    model = convtranspose_net(groups)
    qmodel = _quantize(model)
    assert _axis_and_scales(_weight_dq(qmodel, "ConvTranspose")) == expected
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
    _assert_close(model, qmodel, {"x": x})


def _gemm_text(trans_b: int) -> str:
    shape = "[3, 4]" if trans_b else "[4, 3]"
    values = ", ".join(str(v) for v in np.random.default_rng(trans_b).normal(size=12).round(3))
    return f"""
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2, 3] y) <float{shape} w = {{{values}}}, float[3] c = {{0.1, -0.2, 0.3}}> {{
  y = Gemm <transB = {trans_b}> (x, w, c)
}}
"""


@pytest.mark.parametrize(("trans_b", "axis"), [(0, 1), (1, 0)])
def test_gemm_axis_follows_trans_b(trans_b: int, axis: int) -> None:
    model = from_text(_gemm_text(trans_b))
    qmodel = _quantize(model)
    assert _axis_and_scales(_weight_dq(qmodel, "Gemm")) == (axis, 3)  # N = 3 output features
    _assert_close(model, qmodel, {"x": np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)})


def test_matmul_last_axis_and_gemm_in_mlp() -> None:
    model = mlp_net()
    qmodel = _quantize(model)
    assert _axis_and_scales(_weight_dq(qmodel, "MatMul")) == (1, 8)
    assert _axis_and_scales(_weight_dq(qmodel, "Gemm")) == (0, 16)
    _assert_close(model, qmodel, {"x": np.random.default_rng(3).normal(size=(4, 16)).astype(np.float32)})


def test_per_tensor_option_and_exclusion() -> None:
    model = conv_net()
    qmodel = _quantize(model, NodeFilter(exclude_nodes=("head",)), per_channel=False)
    assert _axis_and_scales(_weight_dq(qmodel, "Conv")) == (None, 1)
    head = next(n for n in qmodel.graph if n.name == "/head/Conv")
    assert head.inputs[1].producer() is None and head.inputs[1].const_value is not None  # still float


MATMUL_SHARED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] a, float[2, 4] b) => (float[2, 3] y) <float[4, 3] w = {1,2,3,4,5,6,7,8,9,10,11,12}> {
  p = MatMul (a, w)
  q = MatMul (b, w)
  y = Add (p, q)
}
"""


def test_shared_weight_is_quantized_once() -> None:
    qmodel = _quantize(from_text(MATMUL_SHARED))
    assert [n.op_type for n in qmodel.graph].count("DequantizeLinear") == 1
    check_onnx(qmodel)
