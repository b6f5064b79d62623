"""Parity report logic (pass/fail rules, NaN, JSON form) and exporter failure messages."""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir
import pytest
import torch

from qdeploy.errors import ExportError
from qdeploy.export import (
    ParityCheck,
    ParityReport,
    ParityTolerance,
    failure_reason,
    require_parity,
    run_parity,
)


def _check(sqnr: float, max_abs: float, allowed: float = 0.1, need: float = 60.0) -> ParityCheck:
    return ParityCheck(((1, 3, 4, 4),), "output", sqnr, max_abs, allowed, 100.0, need)


@pytest.mark.parametrize(("sqnr", "max_abs", "passed"), [
    (120.0, 0.01, True),
    (59.9, 0.01, False),      # SQNR too low
    (120.0, 0.2, False),      # one large pixel error
    (float("nan"), 0.0, False),
    (120.0, float("nan"), False),
    (float("inf"), 0.0, True),  # identical outputs
])
def test_check_pass_rules(sqnr: float, max_abs: float, passed: bool) -> None:
    assert _check(sqnr, max_abs).passed is passed


def test_report_worst_values_and_json() -> None:
    report = ParityReport((_check(float("inf"), 0.0), _check(90.0, 0.05)), ParityTolerance())
    assert report.passed
    assert report.worst_sqnr_db == 90.0 and report.worst_max_abs_error == 0.05
    data = ParityReport((_check(float("inf"), 0.0),), ParityTolerance()).to_dict()
    assert data["worst_sqnr_db"] == "inf" and data["checks"][0]["sqnr_db"] == "inf"


def test_empty_report_does_not_pass() -> None:
    report = ParityReport((), ParityTolerance())
    assert not report.passed
    with pytest.raises(ExportError, match="no outputs were compared"):
        require_parity(report)


def test_require_parity_names_numbers() -> None:
    report = ParityReport((_check(120.0, 0.01), _check(12.5, 3.0, allowed=0.255)), ParityTolerance())
    with pytest.raises(ExportError) as info:
        require_parity(report)
    assert "SQNR 12.5 dB (need >= 60)" in info.value.message
    assert "max abs error 3 (allowed 0.255" in info.value.message
    assert "--min-sqnr" in info.value.hint


@pytest.mark.parametrize("kw", [{"max_abs_rel": 0.0}, {"max_abs_rel": float("inf")},
                                {"min_sqnr_db": float("nan")}])
def test_tolerance_validation(kw: dict) -> None:
    with pytest.raises(ValueError):
        ParityTolerance(**kw)


def _scale_model(factor: float) -> ir.Model:
    """ONNX y = x * factor, built with onnx_ir."""
    x = ir.Value(name="input", shape=ir.Shape([1, 2]), type=ir.TensorType(ir.DataType.FLOAT))
    c = ir.Value(name="c", const_value=ir.tensor(np.array([factor], np.float32)))
    node = ir.node("Mul", [x, c], outputs=[ir.Value(name="output")])
    graph = ir.Graph([x], node.outputs, nodes=[node], initializers=[c], opset_imports={"": 18})
    return ir.Model(graph, ir_version=10)


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def test_run_parity_against_real_ort() -> None:
    inputs = [(torch.tensor([[1.0, -3.0]]),)]
    good = run_parity(_Double(), _scale_model(2.0), inputs, ParityTolerance(), threads=1)
    assert good.passed and math.isinf(good.worst_sqnr_db)
    bad = run_parity(_Double(), _scale_model(2.1), inputs, ParityTolerance(), threads=1)
    assert not bad.passed
    # ref range is 8 (2 - -6), so the allowed max abs error is 1e-3 * 8; the real error is 0.3.
    assert bad.checks[0].max_abs_allowed == pytest.approx(8e-3)
    assert bad.worst_max_abs_error == pytest.approx(0.3, rel=1e-5)


def test_failure_reason_uses_root_cause_without_colours() -> None:
    try:
        try:
            raise ValueError("conflicts found:\n- axis 2 is static\nmore text")
        except ValueError as inner:
            raise RuntimeError("\x1b[96mFailed\x1b[0m to export\nlong advice") from inner
    except RuntimeError as exc:
        reason = failure_reason(exc)
    assert reason == "RuntimeError <- ValueError: conflicts found: - axis 2 is static"
