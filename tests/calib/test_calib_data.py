"""Calibration data readers on real image files and arrays written to tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qdeploy.calib.data import (
    DataConfig,
    count_samples,
    data_fingerprint,
    iter_samples,
    sample_key,
    with_image_defaults,
)
from qdeploy.calib.images import DEFAULT_CROP, DEFAULT_NUM_SAMPLES
from qdeploy.errors import InputError
from qdeploy.types import TensorSpec

RGB_DYN = [TensorSpec("x", ("N", 3, "H", "W"))]
Y_DYN = [TensorSpec("x", ("N", 1, "H", "W"))]
Y_TOL = 1e-4  # float32 output vs float64 reference formula, in 0-255 units


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """PNG files img0.png, img1.png, ... with random pixels; returns the HxWx3 uint8 arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i, (h, w) in enumerate(sizes):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"img{i}.png")
        arrays.append(a)
    return arrays


def samples(config: DataConfig, inputs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    return list(iter_samples(config, inputs))


# ------------------------------------------------------------------------------------------------- images


def test_image_folder_rgb_in_both_value_ranges(tmp_path: Path) -> None:
    imgs = write_images(tmp_path / "d", [(6, 8), (5, 7)])
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    got = samples(DataConfig(tmp_path / "d"), RGB_DYN)
    assert count_samples(DataConfig(tmp_path / "d"), RGB_DYN) == 2
    assert [s["x"].shape for s in got] == [(1, 3, 6, 8), (1, 3, 5, 7)]  # sorted by name, batch axis 1
    assert got[0]["x"].dtype == np.float32
    np.testing.assert_allclose(got[0]["x"][0], imgs[0].transpose(2, 0, 1) / 255.0, rtol=1e-6)
    nhwc = [TensorSpec("x", ("N", "H", "W", 3))]
    raw = samples(DataConfig(tmp_path / "d", value_range="0-255", layout="nhwc"), nhwc)
    np.testing.assert_array_equal(raw[1]["x"][0], imgs[1].astype(np.float32))


def test_y_channel_is_bt601_studio_swing(tmp_path: Path) -> None:
    (img,) = write_images(tmp_path / "d", [(4, 5)])
    (s,) = samples(DataConfig(tmp_path / "d", color="y", value_range="0-255"), Y_DYN)
    rgb = img.astype(np.float64) / 255.0
    expect = 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]
    np.testing.assert_allclose(s["x"][0, 0], expect, atol=Y_TOL)
    (s01,) = samples(DataConfig(tmp_path / "d", color="y"), Y_DYN)
    np.testing.assert_allclose(s01["x"][0, 0], expect / 255.0, atol=Y_TOL / 255.0)
    (g,) = samples(DataConfig(tmp_path / "d", color="gray", value_range="0-255"), Y_DYN)
    np.testing.assert_allclose(g["x"][0, 0], img @ np.array([0.299, 0.587, 0.114]), atol=Y_TOL)


def test_channel_mismatch_suggests_color_option(tmp_path: Path) -> None:
    write_images(tmp_path / "d", [(4, 4)])
    with pytest.raises(InputError, match="expects 1 channel") as err:
        count_samples(DataConfig(tmp_path / "d"), Y_DYN)
    assert "--color y" in err.value.hint
    with pytest.raises(InputError) as err:
        count_samples(DataConfig(tmp_path / "d", color="y"), RGB_DYN)
    assert "--color rgb" in err.value.hint


def test_images_need_a_single_rank4_input(tmp_path: Path) -> None:
    write_images(tmp_path / "d", [(4, 4)])
    with pytest.raises(InputError, match="single-input") as err:
        count_samples(DataConfig(tmp_path / "d"), [*RGB_DYN, TensorSpec("scale", (1,))])
    assert ".npz" in err.value.hint
    with pytest.raises(InputError, match="rank-4"):
        count_samples(DataConfig(tmp_path / "d"), [TensorSpec("x", ("N", 48))])


def test_seeded_random_crops(tmp_path: Path) -> None:
    (img,) = write_images(tmp_path / "d", [(20, 30)])
    config = DataConfig(tmp_path / "d", crop=8, value_range="0-255", seed=3)
    (a,) = samples(config, RGB_DYN)
    (b,) = samples(config, RGB_DYN)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["x"].shape == (1, 3, 8, 8)
    windows = [img[t : t + 8, left : left + 8].transpose(2, 0, 1) for t in range(13) for left in range(23)]
    assert any(np.array_equal(a["x"][0], w) for w in windows)  # a real window of the image
    others = [samples(DataConfig(tmp_path / "d", crop=8, seed=s), RGB_DYN)[0]["x"] for s in range(4, 8)]
    assert any(not np.array_equal(o * 255.0, a["x"]) for o in others)  # the seed moves the crop


def test_image_smaller_than_crop_gives_a_square_of_its_smaller_side(tmp_path: Path) -> None:
    imgs = write_images(tmp_path / "d", [(20, 20), (6, 20)])  # like T91's 78x78 t20.png under --crop 96
    got = samples(DataConfig(tmp_path / "d", crop=8, value_range="0-255"), RGB_DYN)
    assert [s["x"].shape for s in got] == [(1, 3, 8, 8), (1, 3, 6, 6)]
    windows = [imgs[1][:, left : left + 6].transpose(2, 0, 1) for left in range(15)]
    assert any(np.array_equal(got[1]["x"][0], w) for w in windows)  # a real window of the small image
    with pytest.raises(InputError, match=r"img1\.png"):  # a fixed-size model cannot take it
        samples(DataConfig(tmp_path / "d", crop=8), [TensorSpec("x", (1, 3, 8, 8))])


def test_rgb_crop_is_the_whole_image_conversion_cropped(tmp_path: Path) -> None:
    (img,) = write_images(tmp_path / "d", [(30, 40)])
    config = DataConfig(tmp_path / "d", crop=16, seed=5)
    (s,) = samples(config, RGB_DYN)
    whole = np.ascontiguousarray((img.astype(np.float64) / 255.0).transpose(2, 0, 1)[None], dtype=np.float32)
    hits = [(t, left) for t in range(15) for left in range(25)
            if np.array_equal(whole[:, :, t : t + 16, left : left + 16], s["x"])]
    assert len(hits) >= 1  # bit-identical to converting first, then cropping


def test_subfolders_are_read_and_keyed_by_relative_path(tmp_path: Path) -> None:
    write_images(tmp_path / "d" / "T91", [(4, 4), (5, 5)])
    write_images(tmp_path / "d" / "BSD", [(6, 6)], seed=1)
    write_images(tmp_path / "d" / ".cache", [(7, 7)], seed=2)  # hidden folders are skipped
    got = samples(DataConfig(tmp_path / "d"), RGB_DYN)
    assert [s["x"].shape[2] for s in got] == [6, 4, 5]  # BSD/img0, T91/img0, T91/img1
    flat = tmp_path / "flat"
    write_images(flat, [(4, 4), (5, 5)])
    moved = tmp_path / "nested" / "flat"
    shutil.copytree(flat, moved)
    assert data_fingerprint(DataConfig(flat), RGB_DYN) == data_fingerprint(DataConfig(moved), RGB_DYN)
    assert sample_key(tmp_path / "d", tmp_path / "d" / "T91" / "img0.png") == "T91/img0.png"
    assert sample_key(flat, flat / "img1.png") == "img1.png"  # flat folders keep their keys (held-out split)


def test_image_defaults_bound_a_dynamic_model_and_say_so(tmp_path: Path) -> None:
    write_images(tmp_path / "d" / "a", [(100, 120)] * 3)
    write_images(tmp_path / "d" / "b", [(78, 78)], seed=1)  # smaller than the default crop
    config, summary = with_image_defaults(DataConfig(tmp_path / "d"), RGB_DYN, False, False)
    assert (config.crop, config.num_samples) == (DEFAULT_CROP, DEFAULT_NUM_SAMPLES)
    assert summary is not None and (summary.available, summary.selected, summary.smaller_than_crop) == (4, 4, 1)
    line = summary.line()
    assert f"4 random {DEFAULT_CROP}x{DEFAULT_CROP} crops of all 4 images" in line
    assert "defaults; --num-samples/--crop to change" in line and "1 image smaller" in line
    whole, summary = with_image_defaults(DataConfig(tmp_path / "d"), RGB_DYN, True, False)  # --crop none
    assert whole.crop is None and summary is not None and "whole" in summary.line()
    fixed, _ = with_image_defaults(DataConfig(tmp_path / "d"), [TensorSpec("x", (1, 3, 64, 64))], False, False)
    assert fixed.crop is None and fixed.num_samples == DEFAULT_NUM_SAMPLES  # centre-cropped to 64 anyway
    given, summary = with_image_defaults(DataConfig(tmp_path / "d", crop=50, num_samples=2), RGB_DYN, True, True)
    assert (given.crop, given.num_samples) == (50, 2) and summary is not None and "defaults" not in summary.line()
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 4, 4), np.float32))
    arrays = DataConfig(tmp_path / "a.npy")
    assert with_image_defaults(arrays, RGB_DYN, False, False) == (arrays, None)


def test_static_model_size_center_crops_or_refuses(tmp_path: Path) -> None:
    (img,) = write_images(tmp_path / "d", [(10, 12)])
    fixed = [TensorSpec("x", (1, 3, 6, 8))]
    (s,) = samples(DataConfig(tmp_path / "d", value_range="0-255"), fixed)
    np.testing.assert_array_equal(s["x"][0], img[2:8, 2:10].transpose(2, 0, 1))
    with pytest.raises(InputError, match="does not match"):
        samples(DataConfig(tmp_path / "d", crop=4), fixed)
    with pytest.raises(InputError, match="smaller than input"):
        samples(DataConfig(tmp_path / "d"), [TensorSpec("x", (1, 3, 16, 16))])


def test_num_samples_is_a_seeded_subset(tmp_path: Path) -> None:
    write_images(tmp_path / "d", [(4, 4)] * 10)
    all_ = [s["x"] for s in samples(DataConfig(tmp_path / "d"), RGB_DYN)]
    config = DataConfig(tmp_path / "d", num_samples=4, seed=1)
    picked = [s["x"] for s in samples(config, RGB_DYN)]
    assert count_samples(config, RGB_DYN) == 4
    again = [s["x"] for s in samples(config, RGB_DYN)]
    assert all(np.array_equal(a, b) for a, b in zip(picked, again, strict=True))

    def indices(feeds: list[np.ndarray]) -> list[int]:
        return [next(i for i, a in enumerate(all_) if np.array_equal(a, f)) for f in feeds]

    idx = indices(picked)
    assert idx == sorted(idx) and len(set(idx)) == 4
    other = indices([s["x"] for s in samples(DataConfig(tmp_path / "d", num_samples=4, seed=2), RGB_DYN)])
    assert other != idx
    assert count_samples(DataConfig(tmp_path / "d", num_samples=99), RGB_DYN) == 10


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    write_images(tmp_path / "d", [(4, 4)])
    (tmp_path / "d" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match=r"broken\.png"):
        samples(DataConfig(tmp_path / "d"), RGB_DYN)


@pytest.mark.parametrize("layout", ["missing", "empty", "unsupported", "mixed"])
def test_unusable_sources(tmp_path: Path, layout: str) -> None:
    src = tmp_path / "d"
    if layout != "missing":
        src.mkdir()
    if layout == "unsupported":
        (src / "a.txt").write_text("x")
    if layout == "mixed":
        write_images(src, [(4, 4)])
        np.save(src / "b.npy", np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(InputError) as err:
        count_samples(DataConfig(src), RGB_DYN)
    assert err.value.hint
    assert {"missing": "does not exist", "empty": "no supported", "unsupported": "no supported",
            "mixed": "mixes"}[layout] in err.value.message


# ------------------------------------------------------------------------------------------------- arrays

TWO_INPUTS = [TensorSpec("lr", ("N", 1, 4, 4)), TensorSpec("scale", ("N", 2))]


def test_npy_single_input(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).standard_normal((5, 1, 4, 4))
    np.save(tmp_path / "a.npy", arr)
    got = samples(DataConfig(tmp_path / "a.npy", value_range="0-255"), [TWO_INPUTS[0]])
    assert len(got) == 5 and got[2]["lr"].shape == (1, 1, 4, 4) and got[2]["lr"].dtype == np.float32
    np.testing.assert_allclose(got[2]["lr"][0], arr[2], rtol=1e-6)  # arrays are fed as stored
    with pytest.raises(InputError, match="single array") as err:
        count_samples(DataConfig(tmp_path / "a.npy"), TWO_INPUTS)
    assert "npz" in err.value.hint


def test_npz_folder_multi_input_and_selection(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "d").mkdir()
    parts = []
    for i, n in enumerate([3, 4]):
        lr, scale = rng.standard_normal((n, 1, 4, 4)), rng.standard_normal((n, 2))
        np.savez(tmp_path / "d" / f"part{i}.npz", lr=lr, scale=scale, unused=np.zeros(2))
        parts.append((lr, scale))
    got = samples(DataConfig(tmp_path / "d"), TWO_INPUTS)
    assert len(got) == 7
    np.testing.assert_allclose(got[4]["scale"][0], parts[1][1][1], rtol=1e-6)
    config = DataConfig(tmp_path / "d", num_samples=3, seed=5)
    assert count_samples(config, TWO_INPUTS) == 3
    picked = samples(config, TWO_INPUTS)
    assert all(any(np.array_equal(p["lr"], g["lr"]) for g in got) for p in picked)


def test_npz_missing_input_lists_have_and_need(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", lr=np.zeros((2, 1, 4, 4)), scales=np.zeros((2, 2)))
    with pytest.raises(InputError, match="lacks model input") as err:
        count_samples(DataConfig(tmp_path / "a.npz"), TWO_INPUTS)
    assert "scales" in err.value.message and "scale" in err.value.hint


def test_npz_inconsistent_counts_and_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", lr=np.zeros((2, 1, 4, 4)), scale=np.zeros((3, 2)))
    with pytest.raises(InputError, match="different sample counts"):
        count_samples(DataConfig(tmp_path / "a.npz"), TWO_INPUTS)
    np.savez(tmp_path / "b.npz", lr=np.zeros((2, 3, 4, 4)), scale=np.zeros((2, 2)))
    with pytest.raises(InputError, match="has shape"):
        count_samples(DataConfig(tmp_path / "b.npz"), TWO_INPUTS)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_non_finite_arrays_name_key_and_count(tmp_path: Path, suffix: str) -> None:
    arr = np.zeros((3, 1, 4, 4), np.float32)
    arr[1, 0, 0, :2] = np.nan
    arr[2, 0, 1, 0] = np.inf
    path = tmp_path / f"a{suffix}"
    np.save(path, arr) if suffix == ".npy" else np.savez(path, lr=arr)
    with pytest.raises(InputError, match=r"'lr' has 3 NaN/Inf"):
        samples(DataConfig(path), [TWO_INPUTS[0]])


def test_corrupt_array_file(tmp_path: Path) -> None:
    (tmp_path / "a.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(InputError, match=r"a\.npz"):
        count_samples(DataConfig(tmp_path / "a.npz"), TWO_INPUTS)


def test_crop_is_rejected_for_arrays(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((1, 1, 4, 4)))
    with pytest.raises(InputError, match="--crop"):
        count_samples(DataConfig(tmp_path / "a.npy", crop=2), [TWO_INPUTS[0]])


# ------------------------------------------------------------------------------------ fingerprint, config


def test_fingerprint_tracks_content_and_options_not_location(tmp_path: Path) -> None:
    write_images(tmp_path / "d", [(4, 4), (5, 5)])
    base = data_fingerprint(DataConfig(tmp_path / "d"), RGB_DYN)
    assert data_fingerprint(DataConfig(tmp_path / "d"), RGB_DYN) == base
    shutil.copytree(tmp_path / "d", tmp_path / "moved")
    assert data_fingerprint(DataConfig(tmp_path / "moved"), RGB_DYN) == base
    assert data_fingerprint(DataConfig(tmp_path / "d", value_range="0-255"), RGB_DYN) != base
    assert data_fingerprint(DataConfig(tmp_path / "d"), [TensorSpec("x", (1, 3, 4, 4))]) != base
    write_images(tmp_path / "d", [(4, 4)], seed=9)  # same name and size, new pixels
    assert data_fingerprint(DataConfig(tmp_path / "d"), RGB_DYN) != base


@pytest.mark.parametrize(
    "kwargs",
    [
        {"value_range": "0-2"},
        {"color": "bgr"},
        {"crop": 0},
        {"num_samples": -1},
        {"seed": -1},
        {"layout": "chw"},
    ],
)
def test_config_validation(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DataConfig(tmp_path, **kwargs)  # type: ignore[arg-type]
