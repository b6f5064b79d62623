"""Accuracy metrics of a candidate tensor against a float reference (one small function each)."""

from __future__ import annotations

import numpy as np

__all__ = ["compare", "cosine", "max_abs_error", "psnr", "sqnr_db"]

_EPS = 1e-30


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - out)^2); inf if equal."""
    ref64, out64 = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    noise = float(np.sum((ref64 - out64) ** 2))
    signal = float(np.sum(ref64**2))
    if noise == 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, _EPS) / noise))


def psnr(ref: np.ndarray, out: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB with ``peak`` (default: the reference's max minus min, so it is scale-free)."""
    ref64, out64 = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    mse = float(np.mean((ref64 - out64) ** 2))
    if peak is None:
        peak = float(ref64.max() - ref64.min()) or 1.0
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors (1.0 for identical directions)."""
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(out, np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def max_abs_error(ref: np.ndarray, out: np.ndarray) -> float:
    """Largest elementwise absolute difference."""
    return float(np.max(np.abs(np.asarray(ref, np.float64) - np.asarray(out, np.float64)))) if np.size(ref) else 0.0


def compare(ref: np.ndarray, out: np.ndarray, peak: float | None = None) -> dict[str, float]:
    """All four metrics in one dict (the shape used in reports and ``--json``)."""
    return {
        "sqnr_db": sqnr_db(ref, out),
        "psnr_db": psnr(ref, out, peak),
        "cosine": cosine(ref, out),
        "max_abs_error": max_abs_error(ref, out),
    }
