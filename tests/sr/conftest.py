"""Fixtures for the SR tests: a tiny dataset and tiny ONNX upscalers written to tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import onnx_ir as ir
import pytest
from PIL import Image
from qdeploy_calib_data import render_procedural
from sr_helpers import upscaler_text

from qdeploy.graph.io import save_model


@pytest.fixture
def write_upscaler(tmp_path: Path) -> Callable[..., Path]:
    """``write_upscaler(name, scale, offset=0.0, static=False, channels=3)`` -> path of an ONNX upscaler."""

    def write(name: str, scale: int, offset: float = 0.0, static: bool = False, channels: int = 3) -> Path:
        proto = onnx.parser.parse_model(upscaler_text(scale, offset, static, channels))
        return save_model(ir.serde.deserialize_model(proto), tmp_path / name)

    return write


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A 2-image dataset (HR only): one RGB 50x37 (not a multiple of 2 or 3), one grayscale 36x40."""
    root = tmp_path / "tiny"
    (root / "HR").mkdir(parents=True)
    Image.fromarray(render_procedural(1, 37, 50)).save(root / "HR" / "a_rgb.png")
    Image.fromarray(render_procedural(2, 40, 36)[..., 1]).save(root / "HR" / "b_gray.png")
    return root
