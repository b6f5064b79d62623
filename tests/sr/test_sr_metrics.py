"""PSNR-Y / SSIM-Y / RGB PSNR on pairs with known answers, and SSIM vs scikit-image's implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qdeploy_calib_data import render_procedural
from skimage.metrics import structural_similarity

from qdeploy.sr.metrics import psnr_rgb, psnr_y, ssim_y, y_channel

# skimage pads then crops (win-1)/2 = 5 pixels, which leaves exactly MATLAB's 'valid' region; both are
# float64, so they agree to rounding error.
SSIM_TOL = 1e-9
EXACT_REL = 1e-9  # closed-form PSNR values, only float rounding in between


def _photo(seed: int = 3, h: int = 40, w: int = 52) -> np.ndarray:
    return render_procedural(seed, h, w)


def test_y_channel_range_and_weights() -> None:
    black = np.zeros((2, 2, 3), np.uint8)
    white = np.full((2, 2, 3), 255, np.uint8)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert np.allclose(y_channel(black), 16.0, atol=1e-12)
    assert np.allclose(y_channel(white), 235.0, atol=1e-12)
    assert y_channel(red)[0, 0] == pytest.approx(16.0 + 65.481, abs=1e-12)
    assert y_channel(black).dtype == np.float64


def test_identical_images() -> None:
    img = _photo()
    assert psnr_y(img, img, 3) == math.inf
    assert ssim_y(img, img, 3) == 1.0
    assert psnr_rgb(img, img) == math.inf


@pytest.mark.parametrize("k", [1, 2, 7])
def test_constant_y_offset_gives_closed_form_psnr(k: int) -> None:
    """Gray pixels raised by k levels raise Y by d = 219 k / 255 everywhere -> PSNR = 20 log10(255 / d)."""
    rng = np.random.default_rng(k)
    gray = rng.integers(20, 200, (30, 30), dtype=np.uint8)
    hr = np.repeat(gray[..., None], 3, axis=2)
    sr = hr + np.uint8(k)
    d = 219.0 * k / 255.0
    assert psnr_y(sr, hr, 2) == pytest.approx(20 * math.log10(255.0 / d), rel=EXACT_REL)
    assert psnr_rgb(sr, hr) == pytest.approx(20 * math.log10(255.0 / k), rel=EXACT_REL)


def test_shave_removes_border_differences() -> None:
    hr = _photo()
    sr = hr.copy()
    sr[:3] = 0
    sr[:, -3:] = 255
    assert psnr_y(sr, hr, 3) == math.inf
    assert psnr_y(sr, hr, 2) < 30.0
    assert ssim_y(sr, hr, 3) == 1.0


def test_ssim_matches_skimage_on_y_channel() -> None:
    hr = _photo(5, 60, 70)
    noise = np.random.default_rng(0).normal(0, 8, hr.shape)
    sr = np.clip(hr + noise, 0, 255).astype(np.uint8)
    shave = 3
    ref = structural_similarity(
        y_channel(sr)[shave:-shave, shave:-shave], y_channel(hr)[shave:-shave, shave:-shave],
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    got = ssim_y(sr, hr, shave)
    assert 0.5 < got < 0.99
    assert got == pytest.approx(ref, abs=SSIM_TOL)


def test_metric_input_errors() -> None:
    img = _photo()
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(img, img[:-1], 2)
    with pytest.raises(ValueError, match="uint8"):
        psnr_y(img.astype(np.float32), img.astype(np.float32), 2)
    with pytest.raises(ValueError, match="RGB"):
        ssim_y(img[..., 0], img[..., 0], 2)
    with pytest.raises(ValueError, match="too small"):
        psnr_y(img[:6], img[:6], 3)
