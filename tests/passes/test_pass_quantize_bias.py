"""QuantizeBiasPass: int32 bias = round(b / (act_scale * w_scale)); it is what lets ORT fuse QLinearConv."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from qdq_models import check_onnx, minmax_ranges, op_types, run

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import (
    CleanupGraphPass,
    InsertActivationQDQPass,
    QuantizeBiasPass,
    QuantizeWeightsPass,
)
from qdeploy.graph.select import NodeFilter, activation_tensors, constant_array
from qdeploy.quant.params import activation_qparams, quantize_bias, quantize_weight
from qdeploy.types import QuantTarget

MIN_QDQ_SQNR_DB = 30.0


def _build(model: ir.Model, feeds, with_bias: bool) -> ir.Model:
    names = activation_tensors(model.graph, NodeFilter(), outputs=True, through_relu=True)
    ranges = minmax_ranges(model, names, feeds)
    params = {n: activation_qparams(r.lo, r.hi, QuantTarget(8, False), "uint8") for n, r in ranges.items()}
    model = model.clone()
    QuantizeWeightsPass(NodeFilter(), lambda w, axis: quantize_weight(w, axis, dtype="uint8"))(model)
    InsertActivationQDQPass(params)(model)
    if with_bias:
        QuantizeBiasPass(NodeFilter(), quantize_bias)(model)
    CleanupGraphPass()(model)
    return model


def test_bias_scale_is_product_of_scales(conv_model, conv_feeds) -> None:
    qmodel = _build(conv_model, conv_feeds, with_bias=True)
    check_onnx(qmodel)
    conv = next(n for n in qmodel.graph if n.name == "/c2/Conv")
    act_s, w_s, b_s = (constant_array(conv.inputs[i].producer().inputs[1]) for i in range(3))
    b_q = constant_array(conv.inputs[2].producer().inputs[0])
    assert b_q.dtype == np.int32
    np.testing.assert_allclose(b_s, act_s * w_s, rtol=1e-6)
    float_bias = constant_array(ir.serde.deserialize_model(ir.serde.serialize_model(conv_model))
                                .graph.initializers["c2.bias"])
    np.testing.assert_allclose(b_q * b_s, float_bias, atol=float(b_s.max()) / 2 + 1e-9)
    assert sqnr_db(run(conv_model, conv_feeds[0])["y"], run(qmodel, conv_feeds[0])["y"]) >= MIN_QDQ_SQNR_DB


#: Fused integer kernels vs plain QDQ math on the same model (same grid, only rounding order differs).
MIN_FUSED_VS_QDQ_SQNR_DB = 40.0


def test_ort_fuses_int32_bias_into_qlinearconv(conv_model, conv_feeds, tmp_path: Path) -> None:
    qmodel = _build(conv_model, conv_feeds, with_bias=True)
    path = tmp_path / "opt.onnx"
    fused = run(qmodel, conv_feeds[0], level="all", optimized_path=str(path))["y"]
    counts = Counter(op_types(onnx.load(str(path))))
    assert counts["QLinearConv"] == 3 and counts["Conv"] == 0
    assert sqnr_db(run(qmodel, conv_feeds[0])["y"], fused) >= MIN_FUSED_VS_QDQ_SQNR_DB


def test_overflowing_bias_stays_float() -> None:
    assert quantize_bias(np.array([1e6], np.float32), 1e-6, np.array([1e-6], np.float32)) is None
