"""Session fixtures: the integration models and their calibration / held-out data, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from integration_models import conv_images, mlp_features, write_conv_net, write_mlp, write_npz

CALIB_SAMPLES = 12  # not a multiple of 8: the batch-size tests see a ragged last batch


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration")


@pytest.fixture(scope="session")
def conv_model(workdir: Path) -> Path:
    return write_conv_net(workdir / "conv.onnx")


@pytest.fixture(scope="session")
def mlp_model(workdir: Path) -> Path:
    return write_mlp(workdir / "mlp.onnx")


@pytest.fixture(scope="session")
def conv_npz(workdir: Path) -> Path:
    return write_npz(workdir / "conv_calib.npz", x=conv_images(CALIB_SAMPLES, seed=0))


@pytest.fixture(scope="session")
def mlp_npz(workdir: Path) -> Path:
    return write_npz(workdir / "mlp_calib.npz", x=mlp_features(64, seed=0))


@pytest.fixture(scope="session")
def conv_heldout() -> np.ndarray:
    return conv_images(4, seed=1)  # other images than the calibration ones


@pytest.fixture(scope="session")
def mlp_heldout() -> np.ndarray:
    return mlp_features(32, seed=1)
