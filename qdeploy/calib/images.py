"""Image samples for calibration: reading, colour conversion, crop windows, and bounded defaults.

Split from :mod:`qdeploy.calib.data` (which plans and iterates samples of any kind) because images carry
decisions arrays do not: which window of each image to feed, and what to do when nobody said. Reading
every image of a folder whole made ``qdeploy calibrate`` run for over 40 minutes on a 0.7M-parameter
net, so a model with dynamic H/W gets random crops of a bounded number of images unless whole images
are asked for (:func:`image_defaults`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from qdeploy.errors import InputError
from qdeploy.types import TensorSpec

if TYPE_CHECKING:
    from qdeploy.calib.data import DataConfig

__all__ = [
    "CHANNELS",
    "DEFAULT_CROP",
    "DEFAULT_NUM_SAMPLES",
    "ImageSummary",
    "check_image_model",
    "describe_images",
    "has_dynamic_hw",
    "image_defaults",
    "image_sample",
]

CHANNELS = MappingProxyType({"rgb": 3, "y": 1, "gray": 1})
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)

DEFAULT_CROP = 96
"""Crop side (pixels) used when a dynamic-H/W model is calibrated on images without ``--crop``.

Why 96: the size SR nets are commonly trained and calibrated on (48-96 px LR patches), large enough
for every 3x3 stack's receptive field and small enough that 64 crops run in seconds on one core."""

DEFAULT_NUM_SAMPLES = 64
"""Images used when none is said (one crop each). Measured on ABPN x3, 96x96 crops of the 291 training
images, 3 seeds: the knee of range stability vs sample count (see benchmarks/results/calib_defaults.md)."""


def image_axes(layout: str) -> tuple[int, int, int]:
    """Indices of (channel, height, width) in a rank-4 input for ``layout`` (``nchw`` / ``nhwc``)."""
    return (1, 2, 3) if layout == "nchw" else (3, 1, 2)


def _fixed_hw(spec: TensorSpec, layout: str) -> tuple[int | None, int | None]:
    """The input's static height and width (None where dynamic)."""
    _, h_axis, w_axis = image_axes(layout)
    h, w = spec.shape[h_axis], spec.shape[w_axis]
    return (h if isinstance(h, int) else None, w if isinstance(w, int) else None)


def has_dynamic_hw(spec: TensorSpec, layout: str = "nchw") -> bool:
    """Whether a rank-4 image input accepts any height and width (so crops of any size fit)."""
    return len(spec.shape) == 4 and _fixed_hw(spec, layout) == (None, None)


def check_image_model(config: DataConfig, inputs: list[TensorSpec]) -> None:
    """Raise :class:`InputError` unless ``inputs`` is one rank-4 input with the configured channels."""
    if len(inputs) != 1:
        names = ", ".join(s.name for s in inputs)
        raise InputError(
            f"an image folder can feed only a single-input model; this model has inputs {names}",
            "provide an .npz file (or folder of them) keyed by input name",
        )
    spec = inputs[0]
    if len(spec.shape) != 4:
        raise InputError(
            f"input {spec.name!r} has shape {spec.shape}, images need a rank-4 {config.layout.upper()} input",
            "feed this model from .npy/.npz arrays instead of images",
        )
    want = spec.shape[image_axes(config.layout)[0]]
    have = CHANNELS[config.color]
    if isinstance(want, int) and want != have:
        fix = "--color y (or gray)" if want == 1 else "--color rgb" if want == 3 else "arrays (.npy/.npz)"
        raise InputError(
            f"input {spec.name!r} expects {want} channel(s) ({config.layout.upper()} shape {spec.shape}) but "
            f"--color {config.color} gives {have}",
            f"use {fix}; if the channel axis is elsewhere (e.g. NHWC), feed .npy/.npz arrays in the model's layout",
        )


def _read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB; any unreadable/corrupt file becomes an InputError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {exc}", "replace or remove the damaged file") from None


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header only (no pixels decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {exc}", "replace or remove the damaged file") from None


def _to_color(rgb: np.ndarray, color: str) -> np.ndarray:
    """HxWxC float64 in [0, 255] for the configured colour convention."""
    if color == "rgb":
        return rgb.astype(np.float64)
    if color == "y":
        from qdeploy.sr.metrics import y_channel

        return y_channel(rgb)[:, :, None]
    return (rgb.astype(np.float64) @ np.asarray(_GRAY_WEIGHTS))[:, :, None]


def crop_window(config: DataConfig, spec: TensorSpec, path: Path, size: tuple[int, int],
                index: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the window to feed.

    With ``config.crop``: a square at a position seeded by (seed, sample index); an image smaller than
    the crop gives a square of its smaller side (a dynamic-H/W model takes any size, and dropping the
    image would change which samples the others are). Without: the whole image, centre-cropped to the
    model's static H/W when it has them.
    """
    h, w = size
    fixed = _fixed_hw(spec, config.layout)
    if config.crop is not None:
        c = config.crop
        if any(d is not None and d != c for d in fixed):
            raise InputError(
                f"--crop {c} does not match input {spec.name!r}'s fixed size {fixed}",
                f"use --crop {next(d for d in fixed if d is not None)} or drop --crop",
            )
        if (h < c or w < c) and any(d is not None for d in fixed):
            raise InputError(f"image {path} ({h}x{w}) is smaller than --crop {c}, the model's fixed size",
                             "use larger images, or export the model with dynamic height/width")
        c = min(c, h, w)
        rng = np.random.default_rng([config.seed, index])
        return int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1)), c, c
    th, tw = fixed[0] or h, fixed[1] or w
    if th > h or tw > w:
        raise InputError(
            f"image {path} ({h}x{w}) is smaller than input {spec.name!r}'s fixed size {th}x{tw}",
            "use larger images, or export the model with dynamic height/width",
        )
    return (h - th) // 2, (w - tw) // 2, th, tw


def image_sample(config: DataConfig, spec: TensorSpec, path: Path, index: int) -> np.ndarray:
    """One image as a float32 model input with batch axis 1.

    RGB is cropped before the float conversion (element-wise, so the same values, and less work);
    ``y``/``gray`` convert the whole image first, keeping their matrix products exactly as before.
    """
    rgb = _read_rgb(path)
    top, left, ch, cw = crop_window(config, spec, path, rgb.shape[:2], index)
    if config.color == "rgb":
        img = _to_color(rgb[top : top + ch, left : left + cw], "rgb")
    else:
        img = _to_color(rgb, config.color)[top : top + ch, left : left + cw]
    if config.value_range == "0-1":
        img = img / 255.0
    if config.layout == "nchw":
        img = img.transpose(2, 0, 1)
    return np.ascontiguousarray(img[None], dtype=np.float32)


@dataclass(frozen=True)
class ImageSummary:
    """What an image-folder calibration will read: counts for the one line the CLI prints."""

    available: int
    selected: int
    crop: int | None
    smaller_than_crop: int
    defaults: tuple[str, ...] = ()

    def line(self) -> str:
        """E.g. ``calibrating on 64 random 96x96 crops of 64 of the 291 images (defaults; ...)``."""
        of = f"{self.selected} of the {self.available}" if self.selected < self.available else f"all {self.available}"
        if self.crop is None:
            text = f"calibrating on {of} images, whole"
        else:
            text = f"calibrating on {self.selected} random {self.crop}x{self.crop} crops of {of} images"
        if self.defaults:
            text += f" (defaults; {'/'.join('--' + d for d in self.defaults)} to change)"
        if self.smaller_than_crop:
            one = self.smaller_than_crop == 1
            text += (f"; {self.smaller_than_crop} image{'' if one else 's'} smaller than {self.crop} px: cropped to "
                     f"{'its' if one else 'their'} smaller side")
        return text


def describe_images(config: DataConfig, files: list[Path], available: int,
                    defaults: tuple[str, ...] = ()) -> ImageSummary:
    """Summary of the selected image ``files`` (their headers are read to count small ones)."""
    small = 0
    if config.crop is not None:
        small = sum(min(_image_size(p)) < config.crop for p in files)
    return ImageSummary(available, len(files), config.crop, small, defaults)


def image_defaults(config: DataConfig, spec: TensorSpec, crop_given: bool,
                   num_samples_given: bool) -> tuple[DataConfig, tuple[str, ...]]:
    """``config`` with bounded defaults for what was not given, and the names of the options defaulted.

    A dynamic-H/W input gets ``DEFAULT_CROP`` crops (a static one is centre-cropped to its size anyway);
    any image folder gets at most ``DEFAULT_NUM_SAMPLES`` images. Whole images only when asked for
    (``crop_given`` with ``config.crop`` None, i.e. ``--crop none``).
    """
    changes: dict[str, int] = {}
    if not crop_given and config.crop is None and has_dynamic_hw(spec, config.layout):
        changes["crop"] = DEFAULT_CROP
    if not num_samples_given and config.num_samples is None:
        changes["num_samples"] = DEFAULT_NUM_SAMPLES
    names = tuple(("num-samples" if k == "num_samples" else k) for k in sorted(changes, reverse=True))
    return replace(config, **changes), names
