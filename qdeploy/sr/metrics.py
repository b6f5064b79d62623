"""The super-resolution benchmark metrics: PSNR and SSIM on the Y channel, and RGB PSNR.

Why not a generic PSNR: published SR numbers (EDSR, RCAN, BasicSR, PAN, ...) are all computed the same
particular way -- on the luma channel of ITU-R BT.601 YCbCr (Y in [16, 235]), after shaving ``scale``
pixels from every border, with peak 255 -- and SSIM with MATLAB's 11x11 Gaussian window (sigma 1.5) and
'valid' filtering. Any deviation (RGB instead of Y, no shave, a padded SSIM) moves the numbers by tenths
of a dB, which is larger than the quantization losses we want to measure. The inputs are the uint8
images the user would see (the model output rounded to uint8), evaluated in float64.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "psnr_rgb", "psnr_y", "psnr_y_plane", "ssim_y",
           "ssim_y_plane", "y_channel"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_PEAK = 255.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def _check_rgb_uint8(img: np.ndarray, what: str) -> None:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{what} must be an HxWx3 RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (the rounded image a user sees), got {img.dtype}")


def _check_pair(sr: np.ndarray, hr: np.ndarray, shave: int) -> None:
    _check_rgb_uint8(sr, "sr")
    _check_rgb_uint8(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {sr.shape} vs {hr.shape}")
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if min(sr.shape[:2]) <= 2 * shave:
        raise ValueError(f"image {sr.shape[:2]} is too small to shave {shave} pixels per border")


def _check_planes(sr_y: np.ndarray, hr_y: np.ndarray, shave: int) -> None:
    if sr_y.ndim != 2 or sr_y.shape != hr_y.shape:
        raise ValueError(f"sr and hr Y planes must be HxW of one shape, got {sr_y.shape} vs {hr_y.shape}")
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if min(sr_y.shape) <= 2 * shave:
        raise ValueError(f"image {sr_y.shape} is too small to shave {shave} pixels per border")


def _shave(img: np.ndarray, shave: int) -> np.ndarray:
    return img[shave:-shave, shave:-shave] if shave > 0 else img


def y_channel(img_uint8_rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma ``16 + 65.481 R + 128.553 G + 24.966 B`` (RGB in [0, 1]) as float64 in [16, 235].

    Not rounded to uint8 (BasicSR's convention; MATLAB's ``rgb2ycbcr`` on uint8 rounds, which changes
    results by about 0.01 dB).
    """
    _check_rgb_uint8(img_uint8_rgb, "image")
    return img_uint8_rgb.astype(np.float64) / 255.0 @ _Y_WEIGHTS + 16.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(_PEAK * _PEAK / mse))


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Y-channel PSNR (peak 255) after shaving ``shave`` pixels per border; inf for identical images."""
    _check_pair(sr, hr, shave)
    return psnr_y_plane(y_channel(sr), y_channel(hr), shave)


def psnr_y_plane(sr_y: np.ndarray, hr_y: np.ndarray, shave: int) -> float:
    """:func:`psnr_y` on Y planes (HxW, 0..255 scale), for Y-channel models whose output *is* the Y plane."""
    _check_planes(sr_y, hr_y, shave)
    return _psnr(_shave(np.asarray(sr_y, np.float64), shave), _shave(np.asarray(hr_y, np.float64), shave))


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, shave: int = 1) -> float:
    """PSNR over all three RGB channels (peak 255), the ABPN authors' metric (1-pixel shave by default)."""
    _check_pair(sr, hr, shave)
    return _psnr(_shave(sr.astype(np.float64), shave), _shave(hr.astype(np.float64), shave))


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalized 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian', 11, 1.5)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation with 'valid' borders (MATLAB ``filter2(w, img, 'valid')``)."""
    k = kernel.size
    rows = sum(kernel[i] * img[i : img.shape[0] - k + 1 + i] for i in range(k))
    return sum(kernel[j] * rows[:, j : img.shape[1] - k + 1 + j] for j in range(k))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two float64 single-channel images, Wang et al.'s reference ``ssim_index.m``."""
    c1 = (SSIM_K1 * _PEAK) ** 2
    c2 = (SSIM_K2 * _PEAK) ** 2
    w = _gaussian_1d()
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a * mu_a
    var_b = _filter_valid(b * b, w) - mu_b * mu_b
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Y-channel SSIM (11x11 Gaussian, sigma 1.5, K1=0.01, K2=0.03, L=255, 'valid') after the shave."""
    _check_pair(sr, hr, shave)
    return ssim_y_plane(y_channel(sr), y_channel(hr), shave)


def ssim_y_plane(sr_y: np.ndarray, hr_y: np.ndarray, shave: int) -> float:
    """:func:`ssim_y` on Y planes (HxW, 0..255 scale), for Y-channel models."""
    _check_planes(sr_y, hr_y, shave)
    a = _shave(np.asarray(sr_y, np.float64), shave)
    b = _shave(np.asarray(hr_y, np.float64), shave)
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"image {a.shape} after shaving is smaller than the "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window")
    return _ssim(a, b)
