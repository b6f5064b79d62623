"""Fixtures for the pass tests: the tiny models of ``qdq_models`` (exported once per session)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import qdq_models  # tests/passes is on sys.path (pytest rootdir-less "prepend" import)


@pytest.fixture(scope="session")
def conv_model() -> ir.Model:
    return qdq_models.conv_net()


@pytest.fixture(scope="session")
def conv_feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(0, 1, (1, 3, 12, 12)).astype(np.float32)} for _ in range(4)]
