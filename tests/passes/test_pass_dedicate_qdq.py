"""DedicateQDQPass: each consumer of a quantized tensor gets its own identical Q->DQ pair."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from qdq_models import check_onnx, minmax_ranges, run, two_consumer_net

from qdeploy.graph.passes import (
    CleanupGraphPass,
    DedicateQDQPass,
    InsertActivationQDQPass,
    QuantizeWeightsPass,
)
from qdeploy.graph.select import NodeFilter, activation_tensors
from qdeploy.quant.params import activation_qparams, quantize_weight
from qdeploy.types import QuantTarget


def _shared(model: ir.Model, feeds) -> ir.Model:
    names = activation_tensors(model.graph, NodeFilter())
    ranges = minmax_ranges(model, names, feeds)
    params = {n: activation_qparams(r.lo, r.hi, QuantTarget(8, True), "int8") for n, r in ranges.items()}
    model = model.clone()
    QuantizeWeightsPass(NodeFilter(), quantize_weight)(model)
    InsertActivationQDQPass(params)(model)
    CleanupGraphPass()(model)
    return model


def test_two_consumers_get_two_pairs_with_identical_numerics() -> None:
    model = two_consumer_net()
    feeds = {"x": np.random.default_rng(0).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)}
    shared = _shared(model, [feeds])
    dedicated = shared.clone()
    assert DedicateQDQPass()(dedicated).modified
    CleanupGraphPass()(dedicated)
    check_onnx(dedicated)
    q_count = lambda m: [n.op_type for n in m.graph].count("QuantizeLinear")
    assert (q_count(shared), q_count(dedicated)) == (2, 3)  # x, relu output -> relu output split in two
    for node in dedicated.graph:
        if node.op_type == "DequantizeLinear" and node.inputs[0].producer() is not None:
            assert len(node.outputs[0].uses()) == 1
            assert len(node.inputs[0].uses()) == 1  # each Q feeds exactly its own DQ
    np.testing.assert_array_equal(run(shared, feeds)["y"], run(dedicated, feeds)["y"])


def test_already_dedicated_is_unmodified() -> None:
    model = two_consumer_net()
    feeds = {"x": np.random.default_rng(1).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)}
    dedicated = _shared(model, [feeds])
    DedicateQDQPass()(dedicated)
    assert DedicateQDQPass()(dedicated).modified is False
