"""Helpers for the SR tests: paths to ../shared benchmarks and tiny ONNX upscalers (imported by name).

The upscalers are real ONNX graphs (built from ONNX text) whose output we can recompute in numpy exactly:
nearest-neighbour upscaling as Concat of S*S copies + DepthToSpace (no Resize op), optionally plus a
constant, so every number the evaluator reports can be checked against an independent computation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SR_DATA = SHARED / "sr"

needs_shared = pytest.mark.skipif(not (SR_DATA / "Set5" / "HR").is_dir(),
                                  reason="../shared/data/sr benchmarks not present")


def upscaler_text(scale: int, offset: float = 0.0, static: bool = False, channels: int = 3) -> str:
    """ONNX text of y = nearest_upscale(x, scale) + offset, with dynamic (or fixed 8x8) H/W.

    ``channels=1`` gives the Y-channel form (SRCNN-style models take and return only Y).
    """
    dims = f"1, {channels}, 8, 8" if static else f"1, {channels}, H, W"
    copies = ", ".join(["x"] * scale * scale)
    return f"""
    <ir_version: 8, opset_import: ["" : 17]>
    up{scale} (float[{dims}] x) => (float[1, {channels}, ?, ?] y)
    <float off = {{{float(offset)!r}}}>
    {{
        c = Concat <axis = 1> ({copies})
        d = DepthToSpace <blocksize = {scale}, mode = "DCR"> (c)
        y = Add (d, off)
    }}
    """


def nearest_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """numpy reference of the ONNX upscaler (HWC)."""
    return np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
