"""StripQDQPass: activation pairs vanish exactly; weight DQs fold to their dequantized floats."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from qdq_models import check_onnx, minmax_ranges, run

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import STRIP_PIPELINE, InsertActivationQDQPass, QuantizeWeightsPass
from qdeploy.graph.select import NodeFilter, activation_tensors
from qdeploy.quant.params import activation_qparams, quantize_weight
from qdeploy.types import QuantTarget

MIN_WEIGHT_ONLY_SQNR_DB = 35.0


def _strip(model: ir.Model) -> ir.Model:
    model = model.clone()
    for pass_cls in STRIP_PIPELINE:
        pass_cls()(model)
    return model


def _activation_qdq(model: ir.Model, feeds) -> ir.Model:
    names = activation_tensors(model.graph, NodeFilter(), outputs=True, through_relu=True)
    ranges = minmax_ranges(model, names, feeds)
    params = {n: activation_qparams(r.lo, r.hi, QuantTarget(8, False), "uint8") for n, r in ranges.items()}
    model = model.clone()
    InsertActivationQDQPass(params)(model)
    return model


def test_strip_activation_pairs_is_float_exact(conv_model, conv_feeds) -> None:
    qdq = _activation_qdq(conv_model, conv_feeds)
    stripped = _strip(qdq)
    check_onnx(stripped)
    types = [n.op_type for n in stripped.graph]
    assert "QuantizeLinear" not in types and "DequantizeLinear" not in types
    assert types == [n.op_type for n in conv_model.graph]
    assert [v.name for v in stripped.graph.outputs] == ["y"]
    for feeds in conv_feeds:
        np.testing.assert_array_equal(run(stripped, feeds)["y"], run(conv_model, feeds)["y"])
    assert not np.array_equal(run(qdq, conv_feeds[0])["y"], run(conv_model, conv_feeds[0])["y"])


def test_strip_weights_keeps_only_weight_rounding(conv_model, conv_feeds) -> None:
    weights_only = conv_model.clone()
    QuantizeWeightsPass(NodeFilter(), quantize_weight)(weights_only)
    stripped = _strip(weights_only)
    check_onnx(stripped)
    assert all(n.op_type != "DequantizeLinear" for n in stripped.graph)
    ref = run(weights_only, conv_feeds[0])["y"]
    np.testing.assert_allclose(run(stripped, conv_feeds[0])["y"], ref, rtol=1e-5, atol=1e-6)
    assert sqnr_db(run(conv_model, conv_feeds[0])["y"], ref) >= MIN_WEIGHT_ONLY_SQNR_DB
