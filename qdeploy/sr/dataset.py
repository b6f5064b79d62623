"""Load an SR benchmark folder (``HR/*.png`` + optional ``LR_bicubic/X{S}/<name>x{S}.png``) as uint8 pairs.

Why the LR files are optional: Set5/Set14 ship the MATLAB-made LR inputs, B100/Urban100 usually do not.
When a file is missing we make it exactly the way MATLAB did (``qdeploy.sr.imresize.bicubic_downscale``,
bit-exact on every shipped Set5/Set14 file), so numbers stay comparable with published tables.
Grayscale images (Set14 ``bridge``) are expanded to three equal channels, because SR models take RGB and
the Y of a gray RGB image equals the gray value mapped to [16, 235] like any other image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdeploy.errors import InputError
from qdeploy.sr.imresize import bicubic_downscale

__all__ = ["SRPair", "hr_files", "load_rgb", "load_sr_dataset", "lr_path"]

_LAYOUT_HINT = (
    "point --dataset at a folder with HR/*.png (e.g. ../shared/data/sr/Set5); LR inputs are read from "
    "LR_bicubic/X{S}/<name>x{S}.png when present, else made with MATLAB-exact bicubic"
)
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "F")
_LR_SIZE_SLACK = 1  # LR pixels per axis


@dataclass(frozen=True)
class SRPair:
    """One benchmark image: the LR input, the HR ground truth (uncropped), and where the LR came from."""

    name: str
    lr: np.ndarray
    hr: np.ndarray
    lr_source: str  # "file" | "bicubic"

    def __post_init__(self) -> None:
        if self.lr_source not in ("file", "bicubic"):
            raise ValueError(f"lr_source must be 'file' or 'bicubic', got {self.lr_source!r}")
        for what, img in (("lr", self.lr), ("hr", self.hr)):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"{what} of {self.name!r} must be uint8 HxWx3, got {img.dtype} {img.shape}")


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an 8-bit image as uint8 HxWx3 RGB (gray expanded, palette/alpha converted)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _HIGH_BIT_MODES:
                raise InputError(f"{path} is a {im.mode} (high bit depth) image; SR benchmarks are 8-bit",
                                 "convert it to an 8-bit RGB or grayscale PNG")
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc}", "the file is corrupt or not an image") from exc


def hr_files(root: str | os.PathLike[str]) -> list[Path]:
    """The sorted ``HR/*.png`` files of a dataset folder, or :class:`InputError` saying what is wrong."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"dataset folder not found: {root}", _LAYOUT_HINT)
    if not root.is_dir():
        raise InputError(f"dataset must be a folder, got a file: {root}", _LAYOUT_HINT)
    files = sorted((root / "HR").glob("*.png"))
    if not files:
        where = "has no HR/ subfolder" if not (root / "HR").is_dir() else "has no PNG files in HR/"
        raise InputError(f"dataset folder {root} {where}", _LAYOUT_HINT)
    return files


def lr_path(root: str | os.PathLike[str], name: str, scale: int) -> Path:
    """Where the benchmark packs keep the LR input of ``name`` (EDSR/BasicSR naming)."""
    return Path(root) / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png"


def _check_lr_size(name: str, lr: np.ndarray, hr: np.ndarray, scale: int, path: Path) -> None:
    """Reject an LR file that cannot belong to ``hr``; allow off-by-one sizes (cropped at scoring time).

    Off-by-one is real: B100 copies cropped to 480x320 keep LR files made from the 481x321 originals.
    """
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if abs(lr.shape[0] - want[0]) > _LR_SIZE_SLACK or abs(lr.shape[1] - want[1]) > _LR_SIZE_SLACK:
        raise InputError(
            f"LR file {path} is {lr.shape[1]}x{lr.shape[0]}, but HR {name!r} modcropped to x{scale} gives "
            f"{want[1]}x{want[0]}",
            "the LR file does not belong to this HR image or scale; delete it to have it regenerated",
        )


def load_sr_dataset(root: Path, scale: int, max_images: int | None = None) -> list[SRPair]:
    """Load ``root``'s images as (LR, HR) uint8 RGB pairs, sorted by name.

    Args:
        root: dataset folder with ``HR/*.png``.
        scale: the SR factor S (2, 3, 4, ...); selects ``LR_bicubic/X{S}``.
        max_images: keep only the first N images (by name), for quick runs.
    """
    if scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale}", "use e.g. --scale 3")
    if max_images is not None and max_images < 1:
        raise InputError(f"max_images must be >= 1, got {max_images}", "omit it to use every image")
    pairs = []
    for hr_file in hr_files(root)[:max_images]:
        name = hr_file.stem
        hr = load_rgb(hr_file)
        if min(hr.shape[:2]) < scale:
            raise InputError(f"HR image {hr_file} is smaller than the scale {scale}", "remove it from HR/")
        lr_file = lr_path(root, name, scale)
        if lr_file.exists():
            lr = load_rgb(lr_file)
            _check_lr_size(name, lr, hr, scale, lr_file)
            pairs.append(SRPair(name, lr, hr, "file"))
        else:
            pairs.append(SRPair(name, bicubic_downscale(hr, scale), hr, "bicubic"))
    return pairs
