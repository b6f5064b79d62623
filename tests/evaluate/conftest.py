"""Fixtures: tiny float conv models and perturbed copies, written to tmp_path (see profile_conv_models.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from profile_conv_models import conv_weights, write_conv_model


@pytest.fixture
def write_model(tmp_path: Path) -> Callable[..., Path]:
    """``write_model(name, w, b, input_shape=...)`` -> path of a saved conv model in tmp_path."""

    def write(name: str, w: np.ndarray, b: np.ndarray, input_shape: str = "1, 3, 8, 8") -> Path:
        return write_conv_model(tmp_path / name, w, b, input_shape)

    return write


@pytest.fixture
def float_and_perturbed(write_model: Callable[..., Path]) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """(float model, perturbed model, float weight, perturbed weight); same bias for both."""
    w, b = conv_weights()
    noise = np.random.default_rng(1).normal(0, 0.01, w.shape).astype(np.float32)
    w2 = w + noise
    return write_model("float.onnx", w, b), write_model("perturbed.onnx", w2, b), w, w2
