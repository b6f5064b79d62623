"""Y-channel SR models (SRCNN/ESPCN/FSRCNN convention) in evaluate_sr and `qdeploy eval sr`.

The central check: a 1-channel model that upscales Y exactly as a 3-channel model upscales RGB must get
the same Y-PSNR, because the Y transform is affine with weights summing to one (it commutes with any
upscaler whose weights sum to one). The two paths differ only in rounding: the Y path rounds Y to uint8,
the RGB path rounds R, G, B (and clamps overshoot) before taking Y.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from PIL import Image
from qdeploy_cli.eval import eval_group
from sr_helpers import SR_DATA, needs_shared

from qdeploy.errors import InputError
from qdeploy.graph.io import save_model
from qdeploy.sr import SREvalConfig, evaluate_sr, load_sr_dataset
from qdeploy.sr.color import merge_y_with_bicubic_chroma, rgb_to_ycbcr, ycbcr_to_rgb
from qdeploy.sr.imresize import imresize
from qdeploy.sr.metrics import y_channel

# Rounding Y (variance 1/12) instead of R, G, B (Y variance ~0.027, plus clamped cubic overshoot) moves
# the MSE by < 0.1 gray level^2: < 0.02 dB for PSNRs below ~36 dB (every image used here).
Y_VS_RGB_PSNR_TOL_DB = 0.02
Y_VS_RGB_SSIM_TOL = 0.001


def _cubic_text(channels: int, scale: int) -> str:
    """ONNX text of Resize(cubic, a=-0.5) by ``scale`` on a (1, C, H, W) input: a realistic 'SR model'."""
    return f"""
    <ir_version: 8, opset_import: ["" : 17]>
    cubic (float[1, {channels}, H, W] x) => (float[1, {channels}, ?, ?] y)
    <float[4] scales = {{1.0, 1.0, {float(scale)}, {float(scale)}}}>
    {{
        y = Resize <mode = "cubic", cubic_coeff_a = -0.5, coordinate_transformation_mode = "half_pixel">
            (x, , scales)
    }}
    """


def _write_cubic(tmp_path: Path, name: str, channels: int, scale: int) -> Path:
    proto = onnx.parser.parse_model(_cubic_text(channels, scale))
    return save_model(ir.serde.deserialize_model(proto), tmp_path / name)


def _assert_same_y_scores(y_report, rgb_report) -> None:
    (y_row,), (rgb_row,) = y_report.models, rgb_report.models
    assert y_row.color == "y" and rgb_row.color == "rgb"
    for y_img, rgb_img in zip(y_row.images, rgb_row.images):
        assert y_img.psnr_y == pytest.approx(rgb_img.psnr_y, abs=Y_VS_RGB_PSNR_TOL_DB), y_img.name
        assert y_img.ssim_y == pytest.approx(rgb_img.ssim_y, abs=Y_VS_RGB_SSIM_TOL), y_img.name
    assert y_row.psnr_y == pytest.approx(rgb_row.psnr_y, abs=Y_VS_RGB_PSNR_TOL_DB)


def test_color_conversion_round_trips() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    ycc = rgb_to_ycbcr(img)
    assert np.array_equal(ycc[..., 0], y_channel(img))  # one definition of Y
    assert np.array_equal(ycbcr_to_rgb(ycc), img)


def test_y_model_scores_like_the_equivalent_rgb_model(tiny_dataset: Path, write_upscaler) -> None:
    y_model, rgb_model = write_upscaler("near_y.onnx", 2, channels=1), write_upscaler("near.onnx", 2)
    for value_range in (255, 1):
        config = SREvalConfig(tiny_dataset, 2, value_range=value_range, threads=1)
        y_report, rgb_report = evaluate_sr([y_model], config), evaluate_sr([rgb_model], config)
        _assert_same_y_scores(y_report, rgb_report)
        assert "1-channel input" in y_report.models[0].note and not rgb_report.models[0].note


@needs_shared
@pytest.mark.parametrize("dataset, scale", [("Set5", 3), ("Set14", 2)])
def test_y_model_matches_rgb_model_on_real_images(tmp_path: Path, dataset: str, scale: int) -> None:
    """Cubic Resize of Y vs of RGB on real benchmark photos (LR files shipped with the pack)."""
    y_model = _write_cubic(tmp_path, "cubic_y.onnx", 1, scale)
    rgb_model = _write_cubic(tmp_path, "cubic_rgb.onnx", 3, scale)
    config = SREvalConfig(SR_DATA / dataset, scale, threads=1, max_images=3, color="y")
    y_report = evaluate_sr([y_model], config)
    rgb_report = evaluate_sr([rgb_model], SREvalConfig(SR_DATA / dataset, scale, threads=1, max_images=3))
    _assert_same_y_scores(y_report, rgb_report)
    assert not y_report.models[0].note  # --color given: nothing auto-detected
    assert abs(y_report.models[0].psnr_y - y_report.bicubic.psnr_y) < 1.0  # cubic ~ MATLAB bicubic


def test_wrong_color_flag_is_explained(tiny_dataset: Path, write_upscaler) -> None:
    y_model, rgb_model = write_upscaler("near_y.onnx", 2, channels=1), write_upscaler("near.onnx", 2)
    with pytest.raises(InputError, match="1 channel") as exc:
        evaluate_sr([y_model], SREvalConfig(tiny_dataset, 2, color="rgb"))
    assert "--color y" in exc.value.hint
    with pytest.raises(InputError, match="3 channels") as exc:
        evaluate_sr([rgb_model], SREvalConfig(tiny_dataset, 2, color="y"))
    assert "--color rgb" in exc.value.hint


def test_saved_y_output_takes_chroma_from_bicubic(tiny_dataset: Path, write_upscaler, tmp_path: Path) -> None:
    model = write_upscaler("near_y.onnx", 2, channels=1)
    out = tmp_path / "saved"
    report = evaluate_sr([model], SREvalConfig(tiny_dataset, 2, threads=1, save_dir=out, rgb_psnr=True))
    assert report.models[0].psnr_rgb is not None
    for pair in load_sr_dataset(tiny_dataset, 2):
        saved = np.asarray(Image.open(out / "near_y.onnx" / f"{pair.name}.png"))
        want_y = np.repeat(np.repeat(np.round(y_channel(pair.lr)), 2, 0), 2, 1)
        want_chroma = imresize(rgb_to_ycbcr(pair.lr)[..., 1:], 2.0)
        got = rgb_to_ycbcr(saved)
        inside = np.all((saved > 0) & (saved < 255), axis=2)  # clamped pixels cannot round-trip
        assert np.abs(got[..., 0] - want_y)[inside].max() < 1.0  # RGB rounding moves Y < 1 level
        assert np.abs(got[..., 1:] - want_chroma)[inside].max() < 1.5
        assert np.array_equal(saved, merge_y_with_bicubic_chroma(want_y.astype(np.uint8), pair.lr, 2))
        assert (out / "bicubic" / f"{pair.name}.png").is_file()


def test_cli_auto_detects_y_and_refuses_wrong_flag(tiny_dataset: Path, write_upscaler) -> None:
    model = write_upscaler("near_y.onnx", 2, channels=1)
    runner = CliRunner()
    args = ["sr", str(model), "--dataset", str(tiny_dataset), "--scale", "2", "--threads", "1"]
    result = runner.invoke(eval_group, args)
    assert result.exit_code == 0, result.output
    assert "evaluated as a Y-channel model (--color y)" in result.stdout and "near_y.onnx (Y)" in result.stdout
    result = runner.invoke(eval_group, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # the note went to stderr
    assert doc["models"][0]["color"] == "y" and "y_models" in doc["protocol"]
    assert "Y-channel" in result.stderr
    result = runner.invoke(eval_group, [*args, "--color", "rgb"])
    assert isinstance(result.exception, InputError) and "--color y" in result.exception.hint


def test_heldout_crops_and_metric_for_y_models(tiny_dataset: Path) -> None:
    """The accuracy-target helpers (calibrate --target-loss) feed and score Y models like eval sr."""
    from qdeploy.sr.heldout import psnr_evaluator, sr_crops

    files = [tiny_dataset / "HR" / "a_rgb.png"]
    lr_rgb, hr = sr_crops(files, 3, 8, 2, 1.0, seed=0)
    lr_y, hr_y = sr_crops(files, 3, 8, 2, 1.0, seed=0, color="y")
    assert lr_y.shape == (3, 1, 8, 8) and np.array_equal(hr, hr_y)
    rgb8 = np.round(lr_rgb * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.allclose(lr_y[:, 0], [y_channel(x) / 255.0 for x in rgb8], atol=1e-6)
    up = lambda a: np.repeat(np.repeat(a, 2, axis=-2), 2, axis=-1)  # nearest x2, NCHW
    rgb_score = psnr_evaluator(hr, 2, 1.0)([{"y": up(x[None])} for x in lr_rgb])
    y_score = psnr_evaluator(hr, 2, 1.0, color="y")([{"y": up(x[None])} for x in lr_y])
    assert y_score == pytest.approx(rgb_score, abs=Y_VS_RGB_PSNR_TOL_DB)
