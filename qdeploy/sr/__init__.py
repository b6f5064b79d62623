"""Super-resolution benchmarking with the protocol of the SR literature (Y-channel PSNR/SSIM, MATLAB bicubic).

``load_sr_dataset`` reads a benchmark folder, ``evaluate_sr`` runs ONNX models on it and scores them against
the HR images and a bicubic baseline; the metric functions are usable on their own.
"""

from __future__ import annotations

from qdeploy.sr.color import merge_y_with_bicubic_chroma, rgb_to_ycbcr, ycbcr_to_rgb
from qdeploy.sr.dataset import SRPair, load_rgb, load_sr_dataset
from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr, score_image, score_y_image, to_uint8
from qdeploy.sr.imresize import bicubic_downscale, imresize, modcrop
from qdeploy.sr.metrics import psnr_rgb, psnr_y, psnr_y_plane, ssim_y, ssim_y_plane, y_channel
from qdeploy.sr.report import ImageScore, ModelScore, SREvalReport, render_per_image_table, render_table

__all__ = [
    "ImageScore",
    "ModelScore",
    "SREvalConfig",
    "SREvalReport",
    "SRPair",
    "bicubic_downscale",
    "evaluate_sr",
    "imresize",
    "load_rgb",
    "load_sr_dataset",
    "merge_y_with_bicubic_chroma",
    "modcrop",
    "psnr_rgb",
    "psnr_y",
    "psnr_y_plane",
    "render_per_image_table",
    "render_table",
    "rgb_to_ycbcr",
    "score_image",
    "score_y_image",
    "ssim_y",
    "ssim_y_plane",
    "to_uint8",
    "y_channel",
    "ycbcr_to_rgb",
]
