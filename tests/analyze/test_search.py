"""search_precision: meets an SQNR target with fewer raised tensors than uniform 8-bit."""

from __future__ import annotations

import json

import pytest
from analyze_models import run

from qdeploy.analyze.search import PrecisionTarget, model_size_bytes, search_precision
from qdeploy.analyze.sensitivity import output_sqnr
from qdeploy.errors import InputError
from qdeploy.graph.passes.precision_map import quantized_tensors


def _uniform_sqnr(float_model, model, feeds) -> float:
    return output_sqnr([run(float_model, f, "all") for f in feeds], [run(model, f) for f in feeds])


def test_search_meets_sqnr_target_with_fewer_8bit_tensors(float_model, w4a4, w8a8, heldout) -> None:
    low, ranges = w4a4
    low_sqnr, high_sqnr = (
        _uniform_sqnr(float_model, low, heldout),
        _uniform_sqnr(float_model, w8a8[0], heldout),
    )
    target = PrecisionTarget("sqnr", (low_sqnr + high_sqnr) / 2)  # between uniform W4A4 and uniform W8A8
    plan = search_precision(float_model, low, heldout, target, ranges=ranges)
    n = len(plan.precision_map)
    assert plan.met and plan.sqnr_db >= target.value
    assert _uniform_sqnr(float_model, plan.model, heldout) == pytest.approx(
        plan.sqnr_db
    )  # measured, real graph
    raised = sum(label != "int4" for label in plan.precision_map.values())
    assert 0 < raised < n
    assert {t.name: t.label for t in quantized_tensors(plan.model.graph)} == plan.precision_map
    assert model_size_bytes(low) <= plan.size_bytes < plan.float_size_bytes
    assert len(plan.candidates) <= 2 + n.bit_length() + 1  # bisection, not one evaluation per tensor
    assert plan.speed["tensors_float"] == 0 and "line" in plan.speed
    json.dumps(plan.to_dict())


def test_unreachable_8bit_target_leaves_tensors_float(float_model, w4a4, w8a8, heldout) -> None:
    low, ranges = w4a4
    target = PrecisionTarget("sqnr", _uniform_sqnr(float_model, w8a8[0], heldout) + 6.0)
    plan = search_precision(float_model, low, heldout, target, ranges=ranges)
    assert plan.met and plan.counts.get("float", 0) > 0 and "int4" not in plan.counts
    assert {c["stage"] for c in plan.candidates} >= {"int8", "float"}


def test_loss_target_needs_an_evaluator(float_model, w4a4, heldout) -> None:
    with pytest.raises(InputError, match="evaluator"):
        search_precision(float_model, w4a4[0], heldout, PrecisionTarget.parse("loss", "0.05dB"))
    assert PrecisionTarget.parse("sqnr", "35dB") == PrecisionTarget("sqnr", 35.0)
    with pytest.raises(ValueError):
        PrecisionTarget("loss", -1.0)
