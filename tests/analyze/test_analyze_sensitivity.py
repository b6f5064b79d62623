"""Sensitivity analysis: the switchable graph is exact, and a planted bad tensor is ranked first."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx_ir as ir
import pytest
from analyze_models import run

from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity, output_sqnr
from qdeploy.analyze.sensitivity import prepared_float
from qdeploy.analyze.switch import MASK_INPUT, build_switch_graph
from qdeploy.errors import InputError
from qdeploy.graph.passes.precision_map import quantized_tensors

#: How much narrower than calibrated the planted tensor's grid is (clips ~all of its range).
PLANT_SHRINK = 30.0
#: All-switches-off differs from float only by int32 bias rounding: far above any quantized SQNR.
MIN_ALL_OFF_SQNR_DB = 70.0


def _plant(qdq_model: ir.Model, name: str) -> ir.Model:
    """A copy of ``qdq_model`` whose activation ``name`` has a grid PLANT_SHRINK times too narrow."""
    model = qdq_model.clone()
    tensor = next(t for t in quantized_tensors(model.graph) if t.name == name)
    scale_value = tensor.q_nodes[0].inputs[1]
    scale = scale_value.const_value.numpy() / np.float32(PLANT_SHRINK)
    scale_value.const_value = ir.tensor(scale.astype(np.float32), name=scale_value.name)
    return model


def test_switch_graph_all_on_is_the_qdq_graph_bit_for_bit(float_model, w8a8, heldout) -> None:
    qdq_model, _ = w8a8
    switch = build_switch_graph(qdq_model, prepared_float(float_model))
    feed = heldout[0]
    on = run(switch.model, {**feed, MASK_INPUT: switch.mask(True)})["y"]
    off = run(switch.model, {**feed, MASK_INPUT: switch.mask(False)})["y"]
    np.testing.assert_array_equal(on, run(qdq_model, feed)["y"])
    assert output_sqnr([run(float_model, feed, "all")], [{"y": off}]) > MIN_ALL_OFF_SQNR_DB


def test_every_quantized_tensor_is_measured(float_model, w8a8, heldout) -> None:
    qdq_model, ranges = w8a8
    result = analyze_sensitivity(float_model, qdq_model, heldout, ranges=ranges)
    names = {t.name for t in quantized_tensors(qdq_model.graph)}
    assert set(result.ranking) == names and len(names) == 10  # 6 activation pairs + 4 conv weights
    assert [t.rank for t in result.tensors] == list(range(1, len(names) + 1))
    for t in result.tensors:
        assert math.isfinite(t.local_sqnr_db) and math.isfinite(t.only_quantized_sqnr_db)
        # only-this-tensor quantized is closer to float than everything quantized, and vice versa
        assert t.only_quantized_sqnr_db > result.quantized_sqnr_db
        assert t.only_float_sqnr_db < t.only_quantized_sqnr_db
    assert result.all_float_sqnr_db > MIN_ALL_OFF_SQNR_DB
    assert result.timings["sweep_runs"] == (2 * len(names) + 2) * len(heldout)
    json.dumps(result.to_dict())


def test_planted_badly_calibrated_tensor_is_ranked_first(float_model, w8a8, heldout) -> None:
    qdq_model, ranges = w8a8
    clean = analyze_sensitivity(float_model, qdq_model, heldout, ranges=ranges)
    # plant on the activation the clean analysis finds *least* harmful, so only the planting can lift it
    victim = [t.name for t in clean.tensors if t.kind == "activation"][-1]
    assert clean.ranking[0] != victim
    planted = analyze_sensitivity(
        float_model,
        _plant(qdq_model, victim),
        heldout,
        ranges=ranges,
        config=AnalyzeConfig(graph_optimization="disable"),
    )
    assert planted.ranking[0] == victim
    top = planted.tensors[0]
    assert top.clipped_fraction > 0.3  # ReLU zeros sit inside the grid, the positive tail is cut
    assert top.local_sqnr_db == min(t.local_sqnr_db for t in planted.tensors)
    assert top.only_float_sqnr_db > planted.quantized_sqnr_db + 3.0  # un-quantizing it alone helps clearly


def test_task_metric_hook_is_used_for_ranking(float_model, w8a8, heldout) -> None:
    qdq_model, _ = w8a8
    victim = "/Relu_1_output_0"
    calls = []

    def mean_abs(outputs: list[dict[str, np.ndarray]]) -> float:
        calls.append(len(outputs))
        return -float(np.mean([np.abs(o["y"]).mean() for o in outputs]))  # any deterministic score

    def psnr_vs_float(outputs: list[dict[str, np.ndarray]]) -> float:
        ref = [run(float_model, f, "all")["y"] for f in heldout]
        mse = np.mean([np.mean((r - o["y"]) ** 2) for r, o in zip(ref, outputs, strict=True)])
        return float(10 * np.log10(1.0 / max(mse, 1e-20)))

    result = analyze_sensitivity(float_model, _plant(qdq_model, victim), heldout, evaluator=psnr_vs_float)
    assert result.metric == "evaluator" and result.ranking[0] == victim
    assert result.float_score > result.quantized_score
    analyze_sensitivity(float_model, qdq_model, heldout, evaluator=mean_abs)
    assert calls and set(calls) == {len(heldout)}


def test_errors_name_the_fix(float_model, w8a8) -> None:
    with pytest.raises(InputError, match="no analysis samples"):
        analyze_sensitivity(float_model, w8a8[0], [])
    with pytest.raises(InputError, match="no quantized tensors"):
        analyze_sensitivity(float_model, float_model, [{"x": np.zeros((1, 3, 12, 12), np.float32)}])


#: Prefix reuse runs the same graph on the same values: equal up to float summation order (dB).
PREFIX_REUSE_ATOL_DB = 1e-6


@pytest.mark.parametrize("bits", [4, 8])
def test_prefix_reuse_gives_the_full_run_results(float_model, w4a4, w8a8, heldout, bits) -> None:
    qdq_model, _ = w4a4 if bits == 4 else w8a8
    fast = analyze_sensitivity(float_model, qdq_model, heldout, config=AnalyzeConfig(reuse_prefix=True))
    full = analyze_sensitivity(float_model, qdq_model, heldout, config=AnalyzeConfig(reuse_prefix=False))
    assert fast.timings["prefix_cuts"] >= 3 and full.timings["prefix_cuts"] == 0
    by_name = {t.name: t for t in full.tensors}
    for t in fast.tensors:
        ref = by_name[t.name]
        for field in ("only_quantized_sqnr_db", "only_float_sqnr_db"):
            a, b = getattr(t, field), getattr(ref, field)
            assert a == b or abs(a - b) <= PREFIX_REUSE_ATOL_DB, (t.name, field, a, b)
    assert [t.name for t in fast.tensors] == [t.name for t in full.tensors]


def test_prefix_cache_budget_drops_cuts_not_results(float_model, w4a4, heldout) -> None:
    qdq_model, _ = w4a4
    tight = analyze_sensitivity(float_model, qdq_model, heldout, config=AnalyzeConfig(max_cache_mb=0))
    full = analyze_sensitivity(float_model, qdq_model, heldout, config=AnalyzeConfig(reuse_prefix=False))
    assert tight.timings["prefix_cache_mb"] == 0  # only cuts crossed by model inputs alone may stay
    assert [t.only_float_sqnr_db for t in tight.tensors] == [t.only_float_sqnr_db for t in full.tensors]
