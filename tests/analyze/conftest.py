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
