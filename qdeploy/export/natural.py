"""Natural-image inputs for the export parity check (photos for image inputs, random for the rest).

Why not uniform noise everywhere: a trained image network is only defined on images. Some (pixel
attention, exp/sigmoid gates, un-normalized residual stacks) blow up on uniform noise - one pretrained SR
net reached 1e14 - and then PyTorch and ONNX Runtime are compared on garbage: the check fails on a correct
export, or passes on meaningless numbers. So every 4-D float input with 1 or 3 channels gets photos,
resized to cover the input's H x W, centre-cropped and scaled to the model's input range: the user's
``--data DIR`` when given, else photos that ship with scikit-image (read from its install folder, no
download), else images qdeploy renders itself. Other inputs (token ids, masks, gains) stay random.
1-channel inputs get BT.601 luma (Y in [16, 235], as ``qdeploy calibrate --color y`` feeds them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from qdeploy.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["PhotoSource", "fit_photo", "is_image_input", "load_photos", "parity_inputs", "photo_array"]

_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# scikit-image sample photos (in its wheel; public domain / CC0) used when --data is not given.
_SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "motorcycle_left.png", "chelsea.png")
_PROCEDURAL_SIZE = (384, 512)
_DATA_HINT = "pass --data with a folder of images (png/jpg/bmp) like the model's inputs"


@dataclass(frozen=True)
class PhotoSource:
    """uint8 HxWx3 RGB images and what they are, for the report ("2 bundled photos (scikit-image)")."""

    images: tuple[np.ndarray, ...]
    noun: str
    where: str

    def describe(self, n: int) -> str:
        """``"<n> <noun>(s) <where>"``."""
        return f"{n} {self.noun}{'' if n == 1 else 's'} {self.where}"


def is_image_input(t: torch.Tensor) -> bool:
    """A float NCHW tensor with 1 (luma) or 3 (RGB) channels: what the parity check feeds photos to."""
    return t.dtype.is_floating_point and t.dim() == 4 and t.shape[1] in (1, 3)


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}", "replace or remove the damaged file") from None


def _skimage_photos() -> list[Path]:
    try:
        import skimage.data
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in _SKIMAGE_PHOTOS if (folder / name).is_file()]


def load_photos(data: Path | None, count: int) -> PhotoSource:
    """Up to ``count`` images (at least one): from ``data`` (sorted by name), else the bundled photos."""
    count = max(count, 1)
    if data is not None:
        data = Path(data)
        if not data.exists():
            raise InputError(f"--data {data} does not exist", _DATA_HINT)
        files = [data] if data.is_file() else sorted(p for p in data.iterdir() if p.suffix.lower() in _SUFFIXES)
        if not files:
            raise InputError(f"--data {data} holds no images (png/jpg/bmp)", _DATA_HINT)
        return PhotoSource(tuple(_read(p) for p in files[:count]), "image", f"from {data}")
    files = _skimage_photos()
    if files:
        return PhotoSource(tuple(_read(p) for p in files[:count]), "bundled photo", "(scikit-image)")
    from qdeploy_calib_data import render_procedural

    n = min(count, len(_SKIMAGE_PHOTOS))
    return PhotoSource(tuple(render_procedural(300 + i, *_PROCEDURAL_SIZE) for i in range(n)),
                       "image", "rendered by qdeploy")


def fit_photo(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (bicubic, antialiased) so the photo covers ``height x width``, then centre-crop to it."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    resized = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return resized[top:top + height, left:left + width]


def photo_array(shape: Sequence[int], photos: Sequence[np.ndarray], first: int,
                value_range: tuple[float, float]) -> np.ndarray:
    """An ``(N, C, H, W)`` float64 batch from photos ``first, first + 1, ...`` (cycling), each resized to
    cover H x W and centre-cropped, scaled from 0..255 to ``value_range`` (1 channel: BT.601 Y in
    16..235, as ``qdeploy calibrate --color y`` and ``qdeploy eval sr`` feed luma models).

    Shared by export parity and ``profile`` so both feed image models the very same pixels."""
    from qdeploy.sr.metrics import y_channel

    n, c, h, w = shape
    lo, hi = value_range
    items = []
    for b in range(n):
        rgb = fit_photo(photos[(first + b) % len(photos)], h, w)
        pixels = y_channel(rgb)[:, :, None] if c == 1 else rgb.astype(np.float64)
        items.append(lo + pixels.transpose(2, 0, 1) / 255.0 * (hi - lo))
    return np.stack(items)


def _photo_batch(like: torch.Tensor, photos: Sequence[np.ndarray], first: int,
                 value_range: tuple[float, float]) -> torch.Tensor:
    """A batch shaped like ``like`` from photos ``first, first + 1, ...`` (cycling), in ``value_range``."""
    import torch

    return torch.from_numpy(photo_array(tuple(like.shape), photos, first, value_range)).to(like.dtype)


def parity_inputs(sets: Sequence[tuple[torch.Tensor, ...]], value_range: tuple[float, float],
                  data: Path | None = None, photos: bool = True,
                  given: bool = False) -> tuple[list[tuple[torch.Tensor, ...]], str]:
    """``sets`` with every image input replaced by photos, and one line saying what the check is fed.

    Args:
        sets: parity input sets (the example inputs, then other sizes) as random/example tensors.
        value_range: the model's input range; photos are scaled to it.
        data: the user's image folder (``--data``), else bundled photos.
        photos: False keeps uniform random inputs everywhere (the ``--random-parity`` escape hatch).
        given: whether ``sets[0]`` holds the model's own example inputs (for the description).
    """
    image_idx = [i for i, t in enumerate(sets[0]) if is_image_input(t)] if photos else []
    lo, hi = value_range
    rest = f"uniform random inputs in {lo:g}..{hi:g}"
    if given:
        rest = "the model's example inputs" + (f", then {rest}" if len(sets) > 1 else "")
    if not image_idx:
        return list(sets), f"parity on {rest}"
    needed = sum(s[i].shape[0] for s in sets for i in image_idx)
    source = load_photos(data, needed)
    out, used = [], 0
    for s in sets:
        new = list(s)
        for i in image_idx:
            new[i] = _photo_batch(s[i], source.images, used, value_range)
            used += s[i].shape[0]
        out.append(tuple(new))
    sizes = " and ".join(dict.fromkeys(f"{s[i].shape[-2]}x{s[i].shape[-1]}" for s in sets for i in image_idx))
    text = f"parity on {source.describe(min(used, len(source.images)))}, {sizes}, range {lo:g}..{hi:g}"
    if len(image_idx) < len(sets[0]):
        text += f"; other inputs: {rest}"
    return out, text
