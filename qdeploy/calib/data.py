"""Calibration data readers: image folders and numpy arrays -> model feeds, one sample at a time.

Calibration must see inputs preprocessed exactly as in deployment, so the conventions are explicit
options rather than guesses: value range (``0-1`` or ``0-255``), colour (``rgb``; ``y`` = BT.601 luma
``16 + 65.481 R + 128.553 G + 24.966 B`` with RGB in [0, 1], i.e. Y in [16, 235] for ``0-255`` and that
divided by 255 for ``0-1``, not rounded: the SR benchmarks' convention, shared with
:func:`qdeploy.sr.metrics.y_channel`; ``gray`` = full-range ``0.299 R + 0.587 G + 0.114 B``)
and layout (``nchw``/``nhwc``). Arrays (``.npy``/``.npz``) are taken as already preprocessed and only
cast to float32.

Samples are yielded one at a time with a batch axis of 1, so memory does not grow with the data set and
images of different sizes work with models that have dynamic H/W. Everything is deterministic for a
given ``seed``: which files are used when ``num_samples`` is smaller than the data set and where each
random crop sits (seeded per sample index, so a sample's crop does not depend on which others were drawn).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qdeploy.calib.images import (
    CHANNELS,
    ImageSummary,
    check_image_model,
    describe_images,
    image_defaults,
    image_sample,
)
from qdeploy.errors import InputError
from qdeploy.types import TensorSpec

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "DataConfig",
    "count_samples",
    "data_fingerprint",
    "is_heldout",
    "iter_samples",
    "list_files",
    "part_files",
    "sample_key",
    "with_image_defaults",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ARRAY_SUFFIXES = (".npy", ".npz")
_RESAVE = "re-save it with numpy (np.save / np.savez)"


@dataclass(frozen=True)
class DataConfig:
    """Where calibration data comes from and how images become model inputs.

    Attributes:
        source: image folder (or one image), ``.npy`` file (single-input models), ``.npz`` keyed by input
            name, or a folder of ``.npy``/``.npz`` files; subfolders are included.
        value_range: ``"0-1"`` (pixels / 255) or ``"0-255"``; images only.
        color: ``"rgb"`` (3 channels), ``"y"`` or ``"gray"`` (1 channel); images only.
        crop: square crop size at a seeded random position (an image smaller than it gives a square of
            its smaller side); ``None`` uses the whole image (centre-cropped to the model's static H/W when
            it has them). Images only. The CLI bounds it by default: :func:`with_image_defaults`.
        num_samples: how many samples to use (seeded choice); ``None`` or more than available = all.
        seed: seed for the sample choice and crop positions.
        layout: ``"nchw"`` or ``"nhwc"`` for image inputs.
        holdout: fraction of the samples kept out of calibration (chosen by a hash of the file name, or
            of the sample index for arrays: stable when files are added); ``part`` says which side
            this config reads: ``"calibration"`` (the rest) or ``"heldout"`` (for accuracy targets).
    """

    source: Path
    value_range: str = "0-1"
    color: str = "rgb"
    crop: int | None = None
    num_samples: int | None = None
    seed: int = 0
    layout: str = "nchw"
    holdout: float = 0.0
    part: str = "calibration"

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        if self.value_range not in ("0-1", "0-255"):
            raise ValueError(f"value_range must be '0-1' or '0-255', got {self.value_range!r}")
        if self.color not in CHANNELS:
            raise ValueError(f"color must be one of {sorted(CHANNELS)}, got {self.color!r}")
        if self.layout not in ("nchw", "nhwc"):
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {self.layout!r}")
        for name in ("crop", "num_samples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout!r}")
        if self.part not in ("calibration", "heldout"):
            raise ValueError(f"part must be 'calibration' or 'heldout', got {self.part!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True)
class _Plan:
    """Resolved source: its kind, files, samples per file and the selected global sample indices."""

    kind: str  # "images" | "arrays"
    files: tuple[Path, ...]
    per_file: tuple[int, ...]
    selected: tuple[int, ...]


def list_files(source: Path) -> list[Path]:
    """Supported files under ``source``, subfolders included (sorted by relative path), or ``[source]``.

    Why recursive: training sets come as a folder of sets (e.g. ``train/{T91,BSD200}``); hidden files
    and folders are skipped.
    """
    if not source.exists():
        raise InputError(f"calibration data {source} does not exist", "check the path given with --data")
    supported = IMAGE_SUFFIXES + ARRAY_SUFFIXES
    if source.is_file():
        if source.suffix.lower() not in supported:
            raise InputError(f"unsupported calibration data file {source}", f"use one of {supported}")
        return [source]
    files = sorted(
        (p for p in source.rglob("*")
         if p.suffix.lower() in supported and not any(part.startswith(".") for part in p.relative_to(source).parts)
         and p.is_file()),
        key=lambda p: p.relative_to(source).as_posix(),
    )
    if not files:
        raise InputError(
            f"calibration data folder {source} has no supported files",
            f"put images ({', '.join(IMAGE_SUFFIXES)}) or arrays ({', '.join(ARRAY_SUFFIXES)}) in it",
        )
    return files


def sample_key(source: Path, path: Path) -> str:
    """A file's name relative to the data folder (its name for a flat folder or a single file).

    Why relative: it identifies the file for the held-out split and the fingerprint, is unique across
    subfolders, and does not change when the data folder moves.
    """
    return path.name if source.is_file() else path.relative_to(source).as_posix()


def _plan(config: DataConfig, inputs: list[TensorSpec]) -> _Plan:
    files = list_files(config.source)
    n_images = sum(p.suffix.lower() in IMAGE_SUFFIXES for p in files)
    if 0 < n_images < len(files):
        raise InputError(
            f"calibration data folder {config.source} mixes images and arrays",
            "keep images and .npy/.npz files in separate folders",
        )
    if n_images:
        check_image_model(config, inputs)
        per_file = tuple(1 for _ in files)
        kind = "images"
    else:
        if config.crop is not None:
            raise InputError("--crop applies to image folders only", "crop arrays beforehand; drop --crop")
        per_file = tuple(_array_length(p, inputs) for p in files)
        kind = "arrays"
    total = sum(per_file)
    if total == 0:
        raise InputError(f"calibration data {config.source} holds no samples", "add samples (axis 0, N >= 1)")
    pool = _split(config, kind, files, total)
    if config.num_samples is None or config.num_samples >= len(pool):
        selected = tuple(pool)
    else:
        rng = np.random.default_rng(config.seed)
        selected = tuple(pool[int(i)] for i in np.sort(rng.choice(len(pool), size=config.num_samples, replace=False)))
    return _Plan(kind, tuple(files), per_file, selected)


def is_heldout(key: str, holdout: float) -> bool:
    """Whether the sample keyed ``key`` (a file name, or ``"#<index>"``) belongs to the held-out part.

    A hash of the key, not a seeded shuffle: a file stays on its side when others are added or removed.
    """
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < holdout


def part_files(config: DataConfig) -> list[Path]:
    """The image files of ``config.part`` of an image folder (what :func:`iter_samples` reads from it).

    Why public: an SR accuracy target needs the held-out *files* (HR images to make LR/HR pairs from),
    and must split them exactly as calibration did.
    """
    files = [p for p in list_files(config.source) if p.suffix.lower() in IMAGE_SUFFIXES]
    return [files[i] for i in _split(config, "images", files, len(files))] if files else []


def _split(config: DataConfig, kind: str, files: list[Path], total: int) -> list[int]:
    """Global sample indices of ``config.part`` (all of them without a holdout)."""
    if not config.holdout:
        return list(range(total))
    keys = [sample_key(config.source, p) for p in files] if kind == "images" else [f"#{i}" for i in range(total)]
    want = config.part == "heldout"
    pool = [i for i, key in enumerate(keys) if is_heldout(key, config.holdout) == want]
    if not pool:
        raise InputError(f"--holdout {config.holdout:g} leaves no {config.part} samples in {config.source}",
                         "use more samples or another --holdout fraction")
    return pool


def count_samples(config: DataConfig, inputs: list[TensorSpec]) -> int:
    """Number of samples :func:`iter_samples` will yield (validates the source, reads no pixels)."""
    return len(_plan(config, inputs).selected)


def with_image_defaults(config: DataConfig, inputs: list[TensorSpec], crop_given: bool,
                        num_samples_given: bool) -> tuple[DataConfig, ImageSummary | None]:
    """For an image source: ``config`` with bounded defaults for the options not given (see
    :func:`qdeploy.calib.images.image_defaults`) and a summary to print; arrays come back unchanged.

    Why not in :class:`DataConfig`: the defaults depend on the model (dynamic H/W or not), and a
    library caller who builds a config has said what it wants.
    """
    files = list_files(config.source)
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files) or len(inputs) != 1:
        return config, None
    config, defaulted = image_defaults(config, inputs[0], crop_given, num_samples_given)
    plan = _plan(config, inputs)
    available = len(_split(config, "images", list(plan.files), len(plan.files)))
    return config, describe_images(config, [plan.files[i] for i in plan.selected], available, defaulted)


def iter_samples(config: DataConfig, inputs: list[TensorSpec]) -> Iterator[dict[str, np.ndarray]]:
    """Yield feeds ``{input name: float32 array with batch axis 1}``, one sample at a time, in order."""
    plan = _plan(config, inputs)
    if plan.kind == "images":
        for index in plan.selected:
            yield {inputs[0].name: image_sample(config, inputs[0], plan.files[index], index)}
        return
    offsets = np.cumsum((0, *plan.per_file))
    selected = np.asarray(plan.selected)
    for f, path in enumerate(plan.files):
        local = selected[(selected >= offsets[f]) & (selected < offsets[f + 1])] - offsets[f]
        if local.size == 0:
            continue
        arrays = _load_arrays(path, inputs)
        for i in local:
            yield {name: np.ascontiguousarray(a[i : i + 1], dtype=np.float32) for name, a in arrays.items()}


def data_fingerprint(config: DataConfig, inputs: list[TensorSpec]) -> str:
    """SHA-256 identifying the calibration feeds, for the calibration cache.

    Covers every source file's name, size and *content* hash (names and sizes alone miss re-exported
    images), the preprocessing options and the input specs (static H/W decide the crops). The source's
    absolute path is left out, so moving the data folder keeps a cache valid.
    """
    plan = _plan(config, inputs)
    h = hashlib.sha256()
    options = {
        "value_range": config.value_range, "color": config.color, "crop": config.crop,
        "num_samples": config.num_samples, "seed": config.seed, "layout": config.layout,
        **({"holdout": config.holdout, "part": config.part} if config.holdout else {}),
        "inputs": [[s.name, [str(d) for d in s.shape], s.dtype] for s in inputs],
    }  # fmt: skip
    h.update(json.dumps(options, sort_keys=True).encode())
    for path in plan.files:
        h.update(f"{sample_key(config.source, path)}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- arrays


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes in an .npz, read from the member headers without loading the data."""
    shapes: dict[str, tuple[int, ...]] = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(fh)
            shapes[member[: -len(".npy")]] = tuple(shape)
    return shapes


def _array_shapes(path: Path, inputs: list[TensorSpec]) -> dict[str, tuple[int, ...]]:
    """Input name -> stored shape for an .npy/.npz file, checking it can feed ``inputs``."""
    try:
        if path.suffix.lower() == ".npy":
            if len(inputs) != 1:
                raise InputError(
                    f"{path} is a single array but the model has inputs {', '.join(s.name for s in inputs)}",
                    "save an .npz keyed by input name (np.savez(path, **{name: array}))",
                )
            return {inputs[0].name: tuple(np.load(path, mmap_mode="r").shape)}
        stored = _npz_shapes(path)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read calibration array file {path}: {exc}", _RESAVE) from None
    missing = [s.name for s in inputs if s.name not in stored]
    if missing:
        raise InputError(
            f"{path} lacks model input(s) {', '.join(missing)}; "
            f"it has {', '.join(sorted(stored)) or 'nothing'}",
            f"save one array per model input, keyed by name: {', '.join(s.name for s in inputs)}",
        )
    return {s.name: stored[s.name] for s in inputs}


def _array_length(path: Path, inputs: list[TensorSpec]) -> int:
    """Number of samples (batch axis N) in an array file, after checking ranks and static dims."""
    shapes = _array_shapes(path, inputs)
    for spec in inputs:
        shape = shapes[spec.name]
        fixed_ok = all(not isinstance(d, int) or d == s for d, s in zip(spec.shape[1:], shape[1:]))
        if len(shape) != len(spec.shape) or not fixed_ok:
            raise InputError(
                f"{path}: array {spec.name!r} has shape {shape}, model input wants {spec.shape} "
                "(first axis = samples)",
                "store samples along axis 0 with the model's per-sample shape",
            )
    lengths = {shapes[s.name][0] for s in inputs}
    if len(lengths) != 1:
        raise InputError(
            f"{path}: arrays have different sample counts {({s.name: shapes[s.name][0] for s in inputs})}",
            "give every input the same number of samples (axis 0)",
        )
    return lengths.pop()


def _load_arrays(path: Path, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The arrays of one file (memory-mapped for .npy), rejecting NaN/Inf with a count per key."""
    try:
        if path.suffix.lower() == ".npy":
            arrays = {inputs[0].name: np.load(path, mmap_mode="r")}
        else:
            with np.load(path) as npz:
                arrays = {s.name: npz[s.name] for s in inputs}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read calibration array file {path}: {exc}", _RESAVE) from None
    for name, arr in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(arr))) if np.issubdtype(arr.dtype, np.floating) else 0
        if bad:
            raise InputError(
                f"{path}: array {name!r} has {bad} NaN/Inf value(s) of {arr.size}",
                "fix the preprocessing that wrote it (division by zero, log of 0, uninitialised memory)",
            )
    return arrays
