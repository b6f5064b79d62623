"""Measuring models: accuracy metrics against a float reference, and side-by-side latency profiles."""

from __future__ import annotations

from qdeploy.evaluate.metrics import compare, cosine, max_abs_error, psnr, sqnr_db
from qdeploy.evaluate.profile import LatencyStats, ModelProfile, ProfileConfig, ProfileReport, profile_models

__all__ = [
    "LatencyStats",
    "ModelProfile",
    "ProfileConfig",
    "ProfileReport",
    "compare",
    "cosine",
    "max_abs_error",
    "profile_models",
    "psnr",
    "sqnr_db",
]
