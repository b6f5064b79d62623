"""Held-out SR crops and a Y-PSNR task metric on them, for accuracy-targeted mixed precision.

Why crops and not whole images: the precision search re-runs the model once per candidate, so the
metric must be cheap; a few dozen random crops of held-out HR images (LR made with the same MATLAB
bicubic as the benchmarks) track the whole-image PSNR loss closely at a fraction of the cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from qdeploy.errors import InputError

__all__ = ["image_files", "psnr_evaluator", "sr_crops"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def image_files(source: str | os.PathLike[str]) -> list[Path]:
    """Image files of a folder (recursively, sorted) or the single image ``source``."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise InputError(f"held-out image folder {source} does not exist", "pass a folder of HR images")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images (png/jpg/bmp) under {source}", "pass a folder of HR images")
    return files


def sr_crops(files: Sequence[Path], n: int, size: int, scale: int, gain: float,
             seed: int, color: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
    """``n`` random LR crops ``(n, C, size, size)`` scaled to ``[0, gain]`` and their HR crops (uint8 HWC).

    Each crop comes from a seeded random image and position; the LR image is the MATLAB-bicubic
    downscale of the modcropped HR image, so the pair is exactly what the SR protocol evaluates.
    ``color="y"`` gives the LR crops' BT.601 Y (C = 1, the input of Y-channel models, as ``eval sr``).
    """
    from PIL import Image

    from qdeploy.sr.imresize import bicubic_downscale
    from qdeploy.sr.metrics import y_channel

    rng = np.random.default_rng(seed)
    usable = [f for f in files if min(Image.open(f).size) >= scale * size]
    if not usable:
        raise InputError(f"no held-out image is at least {scale * size} pixels on each side",
                         f"use larger images or a smaller crop (now {size} LR pixels)")
    lrs, hrs = [], []
    for i in rng.choice(len(usable), size=n, replace=len(usable) < n):
        hr = np.array(Image.open(usable[i]).convert("RGB"))
        hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        lr = bicubic_downscale(hr, scale)
        y, x = rng.integers(lr.shape[0] - size + 1), rng.integers(lr.shape[1] - size + 1)
        crop = lr[y:y + size, x:x + size]
        lrs.append(y_channel(crop)[None] if color == "y" else crop.transpose(2, 0, 1))
        hrs.append(hr[y * scale:(y + size) * scale, x * scale:(x + size) * scale])
    lr_arr = (np.stack(lrs).astype(np.float32) / (255.0 / gain)).astype(np.float32)
    return lr_arr, np.stack(hrs)


def psnr_evaluator(hrs: np.ndarray, scale: int, gain: float,
                   color: str = "rgb") -> Callable[[list[dict[str, np.ndarray]]], float]:
    """``evaluate(outputs) -> mean Y-PSNR`` of one output per HR crop (shave = scale, the SR protocol).

    ``color="y"``: the outputs are Y planes (Y-channel models), scored directly like ``eval sr`` does.
    """
    from qdeploy.sr.evaluate import score_image, score_y_image, to_uint8

    def evaluate(outputs: list[dict[str, np.ndarray]]) -> float:
        scores = []
        for hr, out in zip(hrs, outputs):
            sr = to_uint8(next(iter(out.values()))[0], int(gain))
            if color == "y":
                scores.append(score_y_image("crop", sr[:, :, 0], hr, scale).psnr_y)
            else:
                scores.append(score_image("crop", sr, hr, scale).psnr_y)
        return float(np.mean(scores))

    return evaluate
