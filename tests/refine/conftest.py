"""Session fixtures: the tiny exported models (exported once) and single-threaded torch."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir
import pytest
from refine_models import export_abpn, export_swin


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """The test machine is shared: keep torch to one thread."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refine_models")


@pytest.fixture(scope="session")
def abpn(models_dir: Path) -> ir.Model:
    return export_abpn(models_dir / "abpn.onnx")


@pytest.fixture(scope="session")
def swin(models_dir: Path) -> ir.Model:
    return export_swin(models_dir / "swin.onnx")
