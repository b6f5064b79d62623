"""Fixtures of the analysis tests: the tiny conv net, calibration and held-out inputs, QDQ variants."""

from __future__ import annotations

import analyze_models  # tests/analyze is on sys.path (pytest rootdir-less "prepend" import)
import numpy as np
import onnx_ir as ir
import pytest

from qdeploy.types import TensorRange


@pytest.fixture(scope="session")
def float_model() -> ir.Model:
    return analyze_models.conv_net()


@pytest.fixture(scope="session")
def calib() -> list[dict[str, np.ndarray]]:
    return analyze_models.feeds(6, seed=0)


@pytest.fixture(scope="session")
def heldout() -> list[dict[str, np.ndarray]]:
    return analyze_models.feeds(3, seed=1)


@pytest.fixture(scope="session")
def w8a8(float_model: ir.Model, calib: list) -> tuple[ir.Model, dict[str, TensorRange]]:
    return analyze_models.qdq(float_model, 8, calib)


@pytest.fixture(scope="session")
def w4a4(float_model: ir.Model, calib: list) -> tuple[ir.Model, dict[str, TensorRange]]:
    return analyze_models.qdq(float_model, 4, calib)


@pytest.fixture(scope="session")
def w4a4_searched(float_model: ir.Model, w4a4, w8a8, heldout) -> tuple:
    """(analysis, plan): the W4A4 model's sensitivity on ``heldout`` and its search to output SQNR 25 dB,
    raising with the W8A8 ranges (what the report tests render)."""
    from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity
    from qdeploy.analyze.search import PrecisionTarget, search_precision

    low, _ = w4a4
    _, ranges8 = w8a8
    config = AnalyzeConfig()
    result = analyze_sensitivity(float_model, low, heldout, ranges=ranges8, config=config)
    plan = search_precision(float_model, low, heldout, PrecisionTarget("sqnr", 25.0), ranges=ranges8,
                            analysis=result, config=config)
    return result, plan
