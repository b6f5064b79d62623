"""InsertActivationQDQPass: Q->DQ pairs from calibrated ranges, shared or per listed consumer."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, minmax_ranges, run

from qdeploy.errors import InputError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import CleanupGraphPass, InsertActivationQDQPass, QuantizeWeightsPass
from qdeploy.graph.select import NodeFilter, activation_slots, activation_tensors, select_nodes
from qdeploy.quant.params import activation_qparams, quantize_weight
from qdeploy.types import QuantTarget

#: 8-bit activations and weights, min/max ranges from the evaluated inputs themselves.
MIN_QDQ_SQNR_DB = 30.0
UINT8 = QuantTarget(8, symmetric=False)


def _params(model: ir.Model, feeds, outputs: bool):
    names = activation_tensors(model.graph, NodeFilter(), outputs=outputs, through_relu=outputs)
    ranges = minmax_ranges(model, names, feeds)
    return {n: activation_qparams(r.lo, r.hi, UINT8, "uint8") for n, r in ranges.items()}


def _qdq(model: ir.Model, params, consumers=None) -> ir.Model:
    model = model.clone()
    QuantizeWeightsPass(NodeFilter(), quantize_weight)(model)
    InsertActivationQDQPass(params, consumers)(model)
    CleanupGraphPass()(model)
    return model


def _assert_all_inputs_from_dq(model: ir.Model) -> None:
    for node in select_nodes(model.graph, NodeFilter(op_types=("Conv",))):
        producers = [v.producer() for v in node.inputs[:2]]
        assert [p.op_type if p else None for p in producers] == ["DequantizeLinear"] * 2, node.name
    for node in model.graph:
        if node.op_type == "DequantizeLinear" and node.inputs[0].producer() is not None:
            assert node.inputs[0].producer().op_type == "QuantizeLinear"


def test_inputs_only_structure_and_sqnr(conv_model, conv_feeds) -> None:
    qmodel = _qdq(conv_model, _params(conv_model, conv_feeds, outputs=False))
    check_onnx(qmodel)
    _assert_all_inputs_from_dq(qmodel)
    types = [n.op_type for n in qmodel.graph]
    assert types.count("QuantizeLinear") == 3 and types.count("DequantizeLinear") == 6
    assert [v.name for v in qmodel.graph.outputs] == ["y"]
    for feeds in conv_feeds:
        assert sqnr_db(run(conv_model, feeds)["y"], run(qmodel, feeds)["y"]) >= MIN_QDQ_SQNR_DB


def test_graph_output_keeps_its_name(conv_model, conv_feeds) -> None:
    qmodel = _qdq(conv_model, _params(conv_model, conv_feeds, outputs=True))
    check_onnx(qmodel)
    out = qmodel.graph.outputs[0]
    assert out.name == "y" and out.producer().op_type == "DequantizeLinear"
    assert out.producer().inputs[0].producer().inputs[0].name == "y_prequant"
    # ReLU folded: c1's ReLU output is quantized, not the raw conv output
    quantized = {n.inputs[0].name for n in qmodel.graph if n.op_type == "QuantizeLinear"}
    assert "/Relu_output_0" in quantized and "/c1/Conv_output_0" not in quantized
    ref, out_q = run(conv_model, conv_feeds[0])["y"], run(qmodel, conv_feeds[0])["y"]
    assert sqnr_db(ref, out_q) >= MIN_QDQ_SQNR_DB


def test_consumers_restrict_rewiring(conv_model, conv_feeds) -> None:
    params = _params(conv_model, conv_feeds, outputs=False)
    qmodel = _qdq(conv_model, params, consumers={"/c2/Conv"})
    add = next(n for n in qmodel.graph if n.op_type == "Add")
    assert all(v.producer().op_type != "DequantizeLinear" for v in add.inputs)  # residual stays float
    c1 = next(n for n in qmodel.graph if n.name == "/c1/Conv")
    assert c1.inputs[0].name == "x"  # not a listed consumer
    c2 = next(n for n in qmodel.graph if n.name == "/c2/Conv")
    assert c2.inputs[0].producer().op_type == "DequantizeLinear"


def test_zero_point_matches_range(conv_model, conv_feeds) -> None:
    params = _params(conv_model, conv_feeds, outputs=False)
    qmodel = _qdq(conv_model, params)
    q_x = next(n for n in qmodel.graph if n.op_type == "QuantizeLinear" and n.inputs[0].name == "x")
    assert q_x.inputs[2].const_value.numpy().dtype == np.uint8
    assert int(q_x.inputs[2].const_value.numpy()) == 0  # x >= 0 -> zero point at the grid minimum
    assert q_x.inputs[1].const_value.shape.rank() == 0  # per-tensor scalar (ORT fusions require it)


@pytest.mark.parametrize("name", ["nope", "c1.weight"])
def test_unknown_or_constant_name_raises(conv_model, name: str) -> None:
    with pytest.raises(InputError, match="cannot quantize activation"):
        InsertActivationQDQPass({name: activation_qparams(0.0, 1.0, UINT8, "uint8")})(conv_model.clone())


def test_activation_slots_used(conv_model) -> None:
    assert all(activation_slots(n) == [0] for n in select_nodes(conv_model.graph, NodeFilter()))
