"""Every profile accuracy number says what it was measured on, and low-bit simulation graphs say so.

Natural images by default for image inputs (the user's --data, else bundled photos), uniform random
inputs on request; the basis appears in the report object, its JSON, the terminal/markdown table and
the caption. A W4A4 QDQ graph (Clip + 8-bit Q/DQ) is labelled as a simulation, not "int8-qdq".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from profile_conv_models import conv_weights, numpy_conv_relu, write_conv_model

from qdeploy.errors import InputError
from qdeploy.evaluate.inputs import natural_inputs
from qdeploy.evaluate.precision import LOWBIT_SIM_NOTE, detect_precision
from qdeploy.evaluate.profile import ProfileConfig, ProfileReport, profile_models
from qdeploy.evaluate.report import caption, render_markdown
from qdeploy.graph.io import load_model, save_model

FAST = {"warmup": 1, "iterations": 3, "threads": 1}
RGB = (10, 200, 60)  # a flat photo: every pixel of the fed image is this colour, whatever the resize
SQNR_TOL_DB = 0.05


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((30, 40, 3), RGB, np.uint8)).save(folder / "flat.png")
    return folder


def _profile(models: list[Path], **kw: object) -> ProfileReport:
    return profile_models(models, ProfileConfig(**{**FAST, **kw}))


def test_natural_inputs_replace_only_image_inputs(photo_dir: Path) -> None:
    feeds = {"img": np.zeros((1, 3, 16, 20), np.float32), "gray": np.zeros((1, 1, 8, 8), np.float32),
             "ids": np.arange(6, dtype=np.int64).reshape(2, 3)}
    out, text = natural_inputs(feeds, (0.0, 255.0), seed=4, data=photo_dir)
    assert out["img"].dtype == np.float32 and out["img"].shape == (1, 3, 16, 20)
    np.testing.assert_allclose(out["img"][0, :, 0, 0], RGB, atol=1e-4)  # 0..255 range: the pixel values
    luma = 16 + (np.array(RGB) / 255.0) @ np.array([65.481, 128.553, 24.966])  # BT.601 Y, as eval sr feeds
    np.testing.assert_allclose(out["gray"], luma, atol=1e-3)
    assert out["ids"] is feeds["ids"]
    assert text == (f"1 image from {photo_dir} at 16x20 and 8x8, scaled to 0..255; "
                    "other inputs: uniform random inputs in 0..255 (seed 4)")


def test_natural_inputs_without_image_inputs_say_random() -> None:
    feeds = {"ids": np.zeros((2, 3), np.int64)}
    assert natural_inputs(feeds, (0.0, 1.0), seed=0)[1] == "uniform random inputs in 0..1 (seed 0)"


def test_empty_data_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no images"):
        natural_inputs({"x": np.zeros((1, 3, 4, 4), np.float32)}, (0.0, 1.0), 0, data=tmp_path)


def test_profile_feeds_the_users_images_and_says_so(tmp_path: Path, photo_dir: Path) -> None:
    w, b = conv_weights()
    w2 = w + np.random.default_rng(1).normal(0, 0.01, w.shape).astype(np.float32)
    a, c = write_conv_model(tmp_path / "float.onnx", w, b), write_conv_model(tmp_path / "near.onnx", w2, b)
    report = _profile([a, c], data=photo_dir)
    x = np.broadcast_to(np.array(RGB, np.float32)[None, :, None, None] / 255.0, (1, 3, 8, 8))
    ref, out = numpy_conv_relu(x, w, b), numpy_conv_relu(x, w2, b)
    expected = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
    assert report.models[1].accuracy["y"]["sqnr_db"] == pytest.approx(expected, abs=SQNR_TOL_DB)
    basis = f"1 image from {photo_dir} at 8x8, scaled to 0..1"
    assert report.input_basis == basis
    assert report.accuracy_basis() == f"accuracy vs float.onnx on ort-cpu on {basis}"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["accuracy_basis"] == report.accuracy_basis() and data["input_basis"] == basis
    assert data["config"]["inputs"] == "natural" and data["config"]["data"] == str(photo_dir)
    assert data["ratio_statistic"] == "median per-round ratio"  # what 'vs 1st' is: not the ratio of p50s
    assert report.accuracy_basis() in render_markdown(report)
    assert f"measured on {basis}" in caption(report)


def test_random_inputs_are_labelled_random(tmp_path: Path) -> None:
    w, b = conv_weights()
    model = write_conv_model(tmp_path / "float.onnx", w, b)
    report = _profile([model], inputs="random", input_range=(0.0, 255.0), seed=3)
    assert report.accuracy_basis() == "accuracy vs float.onnx on ort-cpu on uniform random inputs in 0..255 (seed 3)"
    assert "measured on uniform random inputs in 0..255 (seed 3)" in caption(report)


def test_bundled_photos_are_the_default(tmp_path: Path) -> None:
    w, b = conv_weights()
    report = _profile([write_conv_model(tmp_path / "float.onnx", w, b)])
    assert "random" not in report.input_basis and "at 8x8, scaled to 0..1" in report.input_basis


@pytest.mark.parametrize("kw", [{"inputs": "noise"}, {"inputs": "random", "data": Path("x")}])
def test_bad_input_kind_is_rejected(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="inputs"):
        ProfileConfig(**kw)


def _quantized(fp32: Path, preset: str, dest: Path, **overrides: object) -> Path:
    """The conv model quantized by qdeploy with min/max ranges (x in 0..1)."""
    from qdeploy.quant.presets import get_preset
    from qdeploy.quant.quantize import quantize, tensors_to_calibrate
    from qdeploy.types import TensorRange

    config = get_preset(preset, **overrides)
    model = load_model(fp32)
    ranges = {}
    for name in tensors_to_calibrate(model, config):
        lo, hi = (0.0, 1.0) if name == "x" else (0.0, 4.0)
        ranges[name] = TensorRange(name, lo, hi, lo, hi, 0.0, "minmax", 1)
    return save_model(quantize(model, ranges, config), dest)


@pytest.mark.parametrize(("preset", "overrides", "label"), [
    ("lowbit-sim", {"bits": 4, "op_types": ("Conv",)}, "W4A4 sim (8-bit storage)"),
    ("lowbit-sim", {"weight_bits": 4, "op_types": ("Conv",)}, "W4A8 sim (8-bit storage)"),
    ("lowbit-sim", {"op_types": ("Conv",)}, "int8-qdq"),  # 8 bits: a real int8 graph
    ("ort-cpu-int8", {"reduce_range": True}, "int8-qdq"),  # 7-bit weights are int8 kernel safety
])
def test_lowbit_graphs_are_labelled_as_simulations(tmp_path: Path, preset: str, overrides: dict[str, object],
                                                   label: str) -> None:
    w, b = conv_weights()
    fp32 = write_conv_model(tmp_path / "float.onnx", w, b)
    qdq = _quantized(fp32, preset, tmp_path / "q.onnx", **overrides)
    assert detect_precision(load_model(qdq)) == label


def test_simulation_rows_carry_the_note(tmp_path: Path) -> None:
    w, b = conv_weights()
    fp32 = write_conv_model(tmp_path / "float.onnx", w, b)
    sim = _quantized(fp32, "lowbit-sim", tmp_path / "w4a4.onnx", bits=4, op_types=("Conv",))
    report = _profile([fp32, sim])
    assert [m.precision for m in report.models] == ["fp32", "W4A4 sim (8-bit storage)"]
    assert report.models[1].note == LOWBIT_SIM_NOTE and report.models[0].note == ""
    assert LOWBIT_SIM_NOTE in render_markdown(report)
