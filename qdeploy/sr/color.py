"""Y-channel SR models (SRCNN, ESPCN, FSRCNN convention): their input, and their output as an RGB image.

Why this convention exists: many classic SR networks upscale only the luma; the chroma is upscaled with
bicubic, because the eye (and the Y-PSNR every paper reports) barely sees chroma detail. The conversion is
MATLAB's ``rgb2ycbcr`` (BT.601, Y in [16, 235]) on float RGB in [0, 1], not rounded: the same Y that
:func:`qdeploy.sr.metrics.y_channel` scores and that ``qdeploy calibrate --color y`` feeds, so a Y model is
calibrated, run and scored on one definition of Y.
"""

from __future__ import annotations

import numpy as np

from qdeploy.sr.imresize import imresize
from qdeploy.sr.metrics import y_channel

__all__ = ["merge_y_with_bicubic_chroma", "rgb_to_ycbcr", "ycbcr_to_rgb"]

# MATLAB rgb2ycbcr on RGB in [0, 1]: YCbCr = offset + T @ rgb (Y row = qdeploy.sr.metrics' Y weights).
_T = np.array([[65.481, 128.553, 24.966],
               [-37.797, -74.203, 112.0],
               [112.0, -93.786, -18.214]], dtype=np.float64)
_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_T_INV = np.linalg.inv(_T)


def rgb_to_ycbcr(img_uint8_rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx3 float64 YCbCr on the 0..255 scale (Y in [16, 235]), not rounded.

    Y is :func:`~qdeploy.sr.metrics.y_channel` itself (bit for bit), so the Y a model is fed equals the Y
    it is scored on.
    """
    ycbcr = img_uint8_rgb.astype(np.float64) / 255.0 @ _T.T + _OFFSET
    ycbcr[..., 0] = y_channel(img_uint8_rgb)
    return ycbcr


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (MATLAB ``ycbcr2rgb``): float YCbCr -> uint8 RGB, clamped and rounded."""
    rgb = (np.asarray(ycbcr, dtype=np.float64) - _OFFSET) @ _T_INV.T * 255.0
    return np.clip(np.floor(rgb + 0.5), 0, 255).astype(np.uint8)


def merge_y_with_bicubic_chroma(y_uint8: np.ndarray, lr_rgb: np.ndarray, scale: int) -> np.ndarray:
    """The RGB image a user of a Y model saves: the model's Y plane plus MATLAB-bicubic upscaled Cb/Cr.

    ``y_uint8`` is the model output (HxW, uint8 Y as the user would store it); the chroma is the LR image's
    Cb/Cr (float) resized by ``scale`` and cropped to the Y plane's size.
    """
    chroma = imresize(rgb_to_ycbcr(lr_rgb)[:, :, 1:], float(scale))
    h, w = min(y_uint8.shape[0], chroma.shape[0]), min(y_uint8.shape[1], chroma.shape[1])
    ycbcr = np.concatenate([y_uint8[:h, :w, None].astype(np.float64), chroma[:h, :w]], axis=2)
    return ycbcr_to_rgb(ycbcr)
