"""Materialize the demo's calibration and evaluation images into a folder, without network or ../shared.

Why not commit images: the photos already ship inside a pip dependency (scikit-image's ``skimage.data``
PNG/JPEG files, public domain or CC0 per skimage's README), so we read them from the installed package
directly (never through ``skimage.data``'s pooch downloader, which may need the network) and write
resized copies. Without scikit-image we render deterministic synthetic "photos" (gradients, shapes,
noise texture, glyph-like strokes) so the demo still runs; the marker file says which source was used.

The two sets are disjoint on purpose: calibrating on the images you then score inflates the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from qdeploy.errors import InputError
from qdeploy.sr.imresize import imresize, modcrop

__all__ = [
    "CALIBRATION_IMAGES",
    "EVAL_IMAGES",
    "MARKER",
    "MAX_SIDE",
    "demo_calibration_dir",
    "demo_eval_dir",
    "demo_image_source",
    "read_marker",
    "render_procedural",
]

# skimage.data name -> file inside the installed skimage/data folder (all ship with the wheel).
_SKIMAGE_FILES = {
    "astronaut": "astronaut.png", "coffee": "coffee.png", "immunohistochemistry": "ihc.png",
    "motorcycle_left": "motorcycle_left.png", "retina": "retina.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "chelsea": "chelsea.png", "rocket": "rocket.jpg", "camera": "camera.png",
}
CALIBRATION_IMAGES = ("astronaut", "coffee", "immunohistochemistry", "motorcycle_left", "retina",
                      "hubble_deep_field")
EVAL_IMAGES = ("chelsea", "rocket", "camera")  # camera is grayscale: exercises the gray-HR path
MAX_SIDE = 512
EVAL_MULTIPLE = 12  # eval HR sizes divisible by 2, 3 and 4, so no scale needs a modcrop
MARKER = ".qdeploy-demo.json"
_VERSION = 1
_SOURCES = ("auto", "skimage", "procedural")
# Procedural fallback: (name, seed, height, width); seeds differ between the sets so they are disjoint.
_PROC_CALIB = tuple((f"synthetic_{i:02d}", 100 + i, 384 if i % 2 else 512, 512 if i % 2 else 384)
                    for i in range(6))
_PROC_EVAL = tuple((f"synthetic_eval_{i}", 200 + i, 288, 384) for i in range(3))


def _skimage_dir() -> Path | None:
    """The installed skimage data folder if every demo file is in it (no download needed), else None."""
    try:
        import skimage.data
    except ImportError:
        return None
    folder = Path(skimage.data.__file__).parent
    return folder if all((folder / f).is_file() for f in _SKIMAGE_FILES.values()) else None


def demo_image_source() -> str:
    """"skimage" when the bundled scikit-image photos are usable here, else "procedural"."""
    return "skimage" if _skimage_dir() is not None else "procedural"


def _resolve(source: str) -> str:
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}")
    if source == "auto":
        return demo_image_source()
    if source == "skimage" and _skimage_dir() is None:
        raise InputError("scikit-image (with its bundled sample photos) is not installed",
                         "pip install 'qdeploy[demo]', or use source='procedural'")
    return source


def _shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    """MATLAB-bicubic (antialiased) downscale so the long side is at most ``max_side``."""
    long_side = max(img.shape[:2])
    if long_side <= max_side:
        return img
    return imresize(img, max_side / long_side)[:max_side, :max_side]


def _load_skimage(name: str, max_side: int) -> np.ndarray:
    from PIL import Image

    with Image.open(_skimage_dir() / _SKIMAGE_FILES[name]) as im:  # type: ignore[operator]
        img = np.asarray(im if im.mode in ("RGB", "L") else im.convert("RGB"))
    return _shrink(img, max_side)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] (HxWx3): a coarse random grid upscaled with PIL's bicubic."""
    from PIL import Image

    grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    up = Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float64) / 255.0


def _draw_shapes(draw, rng: np.random.Generator, h: int, w: int) -> None:
    for _ in range(int(rng.integers(6, 12))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1 = x0 + int(rng.integers(max(w // 10, 1), max(w // 3, 2)))
        y1 = y0 + int(rng.integers(max(h // 10, 1), max(h // 3, 2)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=color)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), outline=color, width=int(rng.integers(2, 8)))
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=color)


def _draw_strokes(draw, rng: np.random.Generator, h: int, w: int) -> None:
    """Rows of short glyph-like strokes (text is where SR and quantization errors show first)."""
    size = int(rng.integers(18, 32))
    y = int(rng.integers(0, max(h // 3, 1)))
    for _ in range(int(rng.integers(2, 5))):
        x = int(rng.integers(0, max(w // 4, 1)))
        while x < w - 2 * size:
            for _ in range(int(rng.integers(1, 4))):
                a = (x + int(rng.integers(0, size)), y + int(rng.integers(0, size)))
                b = (x + int(rng.integers(0, size)), y + int(rng.integers(0, size)))
                draw.line((a, b), fill=(20, 20, 20), width=3)
            x += size + int(rng.integers(2, size))
        y += 2 * size
        if y > h - size:
            break


def render_procedural(seed: int, height: int, width: int) -> np.ndarray:
    """A deterministic synthetic RGB "photo" (uint8 HxWx3): gradient, blobs, shapes, texture, strokes.

    Rendered at twice the size and box-averaged down, so edges are soft like a camera's.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = 2 * height, 2 * width
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    base = rng.uniform(0.2, 0.8, 3) + rng.uniform(-0.4, 0.4, 3) * ramp
    img = 0.6 * base + 0.4 * _smooth_noise(rng, h, w, int(rng.integers(4, 9)))
    pil = Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    _draw_shapes(draw, rng, h, w)
    _draw_strokes(draw, rng, h, w)
    texture = rng.normal(0.0, 6.0, (h, w, 1)) * _smooth_noise(rng, h, w, 3)[..., :1]
    out = np.clip(np.asarray(pil, dtype=np.float64) + texture, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(out).reduce(2))[:height, :width]


def _images(kind: str, source: str, max_side: int) -> dict[str, np.ndarray]:
    """name -> uint8 image of one set; eval images are cropped to multiples of ``EVAL_MULTIPLE``."""
    if source == "skimage":
        names = CALIBRATION_IMAGES if kind == "calibration" else EVAL_IMAGES
        images = {n: _load_skimage(n, max_side) for n in names}
    else:
        specs = _PROC_CALIB if kind == "calibration" else _PROC_EVAL
        images = {n: render_procedural(seed, min(h, max_side), min(w, max_side)) for n, seed, h, w in specs}
    if kind == "eval":
        images = {n: modcrop(img, EVAL_MULTIPLE) for n, img in images.items()}
    return images


def read_marker(folder: str | os.PathLike[str]) -> dict | None:
    """The demo marker of ``folder`` (kind, source, files with sha256), or None if it has none."""
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _is_current(dest: Path, kind: str, source: str, max_side: int) -> bool:
    marker = read_marker(dest)
    if not marker:
        return False
    found = (marker.get("version"), marker.get("kind"), marker.get("source"), marker.get("max_side"))
    if found != (_VERSION, kind, source, max_side):
        return False
    return all((dest / rel).is_file() for rel in marker.get("files", {}))


def _write_set(folder: Path, kind: str, source: str, max_side: int) -> None:
    from PIL import Image

    sub = folder / "HR" if kind == "eval" else folder
    sub.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, img in _images(kind, source, max_side).items():
        path = sub / f"{name}.png"
        Image.fromarray(img).save(path, optimize=False, compress_level=6)
        files[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    origin = "scikit-image sample photos (skimage.data)" if source == "skimage" else "rendered by qdeploy"
    marker = {"format": "qdeploy-demo-images", "version": _VERSION, "kind": kind, "source": source,
              "origin": origin, "max_side": max_side, "files": files}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _swap_in(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` folder to ``dest`` (replacing an outdated demo folder there)."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
        os.replace(dest, old / "x")
    try:
        os.replace(tmp, dest)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _materialize(dest: str | os.PathLike[str], kind: str, source: str, max_side: int) -> Path:
    dest = Path(dest)
    source = _resolve(source)
    if max_side < 64:
        raise ValueError(f"max_side must be >= 64, got {max_side}")
    if _is_current(dest, kind, source, max_side):
        return dest
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and read_marker(dest) is None)):
        raise InputError(f"{dest} exists and is not a qdeploy demo folder; refusing to overwrite it",
                         "pass a new or empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        _write_set(tmp, kind, source, max_side)
        try:
            _swap_in(tmp, dest)
        except OSError:
            if not _is_current(dest, kind, source, max_side):  # a concurrent call won: fine if it is current
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def demo_calibration_dir(dest: Path, *, source: str = "auto", max_side: int = MAX_SIDE) -> Path:
    """Write the calibration photos (``dest/<name>.png``) and return ``dest``; idempotent and atomic.

    Args:
        dest: folder to create (or an earlier demo folder, refreshed if outdated).
        source: "auto" (skimage if installed, else procedural), "skimage" or "procedural".
        max_side: long side in pixels after the antialiased downscale.
    """
    return _materialize(dest, "calibration", source, max_side)


def demo_eval_dir(dest: Path, *, source: str = "auto", max_side: int = MAX_SIDE) -> Path:
    """Write the evaluation photos as ``dest/HR/<name>.png`` (the layout ``qdeploy eval sr`` reads).

    Disjoint from :func:`demo_calibration_dir`'s images; sizes are multiples of 12 (fit x2/x3/x4).
    """
    return _materialize(dest, "eval", source, max_side)
