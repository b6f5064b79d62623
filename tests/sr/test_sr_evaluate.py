"""evaluate_sr end to end with real ORT sessions on tiny ONNX upscalers whose output numpy recomputes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sr_helpers import SR_DATA, nearest_upscale, needs_shared

from qdeploy.errors import InputError
from qdeploy.graph.io import load_model
from qdeploy.sr import SREvalConfig, evaluate_sr, load_sr_dataset, score_image
from qdeploy.sr.imresize import modcrop
from qdeploy.sr.metrics import psnr_rgb, psnr_y, ssim_y

SET5_X3_BICUBIC_PSNR_Y = 30.39  # every SR paper's bicubic row (MATLAB evaluation)
SET5_X3_BICUBIC_TOL = 0.02  # float (unrounded) Y vs MATLAB's uint8 Y accounts for ~0.015 dB
SET5_X3_BICUBIC_SSIM_Y = 0.8682
SET5_X3_BICUBIC_SSIM_TOL = 0.001


def _expected(dataset: Path, scale: int, offset: int = 0) -> tuple[list[float], list[float], list[float]]:
    """Independent numpy scores of nearest upscaling (+ offset gray levels) per image."""
    p_y, s_y, p_rgb = [], [], []
    for pair in load_sr_dataset(dataset, scale):
        sr = np.clip(nearest_upscale(pair.lr, scale).astype(np.int64) + offset, 0, 255).astype(np.uint8)
        hr = modcrop(pair.hr, scale)
        p_y.append(psnr_y(sr, hr, scale))
        s_y.append(ssim_y(sr, hr, scale))
        p_rgb.append(psnr_rgb(sr, hr, 1))
    return p_y, s_y, p_rgb


def test_scores_match_independent_computation(tiny_dataset: Path, write_upscaler) -> None:
    ref, worse = write_upscaler("near.onnx", 2), write_upscaler("near_plus3.onnx", 2, offset=3.0)
    calls: list[tuple[str, int, int]] = []
    report = evaluate_sr([ref, worse], SREvalConfig(tiny_dataset, 2, threads=1, rgb_psnr=True),
                         progress=lambda *a: calls.append(a))
    assert [r.label for r in report.rows] == ["near.onnx", "near_plus3.onnx", "bicubic"]
    for row, offset in zip(report.models, (0, 3)):
        p_y, s_y, p_rgb = _expected(tiny_dataset, 2, offset)
        assert [s.psnr_y for s in row.images] == pytest.approx(p_y, rel=1e-12)
        assert [s.ssim_y for s in row.images] == pytest.approx(s_y, rel=1e-12)
        assert row.psnr_y == pytest.approx(np.mean(p_y), rel=1e-12)
        assert row.psnr_rgb == pytest.approx(np.mean(p_rgb), rel=1e-12)
    m0, m1 = report.models
    assert m0.delta_psnr_y == 0.0
    assert m1.delta_psnr_y == pytest.approx(m1.psnr_y - m0.psnr_y) and m1.delta_psnr_y < -0.1
    assert report.bicubic.psnr_y > m0.psnr_y  # bicubic beats nearest on smooth images
    assert report.lr_sources == {"a_rgb": "bicubic", "b_gray": "bicubic"}
    assert calls[-1] == ("bicubic", 2, 2) and ("near.onnx", 2, 2) in calls
    doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert doc["models"][1]["delta_psnr_y"] < 0 and len(doc["bicubic"]["images"]) == 2


def test_value_range_one_gives_same_numbers(tiny_dataset: Path, write_upscaler) -> None:
    """Nearest upscaling is scale-invariant, so range 1 (inputs /255, outputs *255) must score the same."""
    model = write_upscaler("near.onnx", 2)
    r255 = evaluate_sr([model], SREvalConfig(tiny_dataset, 2, threads=1))
    r1 = evaluate_sr([model], SREvalConfig(tiny_dataset, 2, value_range=1, threads=1))
    assert r1.models[0].psnr_y == pytest.approx(r255.models[0].psnr_y, rel=1e-12)


def test_in_memory_models_and_labels(tiny_dataset: Path, write_upscaler) -> None:
    path = write_upscaler("near.onnx", 3)
    model = load_model(path)
    report = evaluate_sr([model, path.read_bytes()], SREvalConfig(tiny_dataset, 3, threads=1))
    assert [r.label for r in report.models] == ["up3", "model2"]
    assert report.models[0].psnr_y == report.models[1].psnr_y
    named = evaluate_sr([path], SREvalConfig(tiny_dataset, 3, threads=1), labels=["float"])
    assert named.models[0].label == "float"


def test_static_size_model_is_refused(tiny_dataset: Path, write_upscaler) -> None:
    with pytest.raises(InputError, match="fixed size") as exc:
        evaluate_sr([write_upscaler("static.onnx", 2, static=True)], SREvalConfig(tiny_dataset, 2))
    assert "--dynamic-hw" in exc.value.hint


def test_wrong_scale_is_explained(tiny_dataset: Path, write_upscaler) -> None:
    with pytest.raises(InputError, match=r"x2\)") as exc:
        evaluate_sr([write_upscaler("near.onnx", 2)], SREvalConfig(tiny_dataset, 3))
    assert "scale" in exc.value.hint


def test_size_mismatch_is_cropped_and_noted() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 31, 3), dtype=np.uint8)  # modcrop x3 -> 39x30
    sr = np.zeros((42, 30, 3), np.uint8)
    sr[:39] = modcrop(hr, 3)
    score = score_image("x", sr, hr, 3)
    assert score.psnr_y == math.inf
    assert "cropped to 30x39" in score.note


def test_config_validation(tiny_dataset: Path) -> None:
    with pytest.raises(ValueError, match="value_range"):
        SREvalConfig(tiny_dataset, 3, value_range=2)
    with pytest.raises(ValueError, match="scale"):
        SREvalConfig(tiny_dataset, 0)


@needs_shared
def test_bicubic_baseline_on_set5_x3() -> None:
    """The whole protocol (LR files, modcrop, upscale, Y, shave, SSIM) reproduces the papers' bicubic row."""
    report = evaluate_sr([], SREvalConfig(SR_DATA / "Set5", 3))
    assert report.bicubic.psnr_y == pytest.approx(SET5_X3_BICUBIC_PSNR_Y, abs=SET5_X3_BICUBIC_TOL)
    assert report.bicubic.ssim_y == pytest.approx(SET5_X3_BICUBIC_SSIM_Y, abs=SET5_X3_BICUBIC_SSIM_TOL)
    assert report.models == ()
