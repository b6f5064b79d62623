"""Demo image folders: disjoint sets, deterministic bytes, idempotent, safe, and readable by eval sr."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image
from qdeploy_calib_data import (
    CALIBRATION_IMAGES,
    EVAL_IMAGES,
    MAX_SIDE,
    demo_calibration_dir,
    demo_eval_dir,
    demo_image_source,
    read_marker,
)

from qdeploy.errors import InputError
from qdeploy.sr.dataset import load_sr_dataset

SOURCES = ["procedural", pytest.param("skimage", marks=pytest.mark.skipif(
    demo_image_source() != "skimage", reason="scikit-image sample photos not installed"))]


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


@pytest.mark.parametrize("source", SOURCES)
def test_sets_are_disjoint_deterministic_and_sized(tmp_path: Path, source: str) -> None:
    calib = demo_calibration_dir(tmp_path / "a" / "calib", source=source)
    evald = demo_eval_dir(tmp_path / "a" / "eval", source=source)
    c_hash, e_hash = _hashes(calib), _hashes(evald)
    assert len(c_hash) >= 5 and 2 <= len(e_hash) <= 3
    assert all(k.startswith("HR/") for k in e_hash)
    assert not set(c_hash.values()) & set(e_hash.values())
    assert not {Path(k).stem for k in c_hash} & {Path(k).stem for k in e_hash}
    for p in [*calib.glob("*.png"), *evald.glob("HR/*.png")]:
        with Image.open(p) as im:
            assert max(im.size) <= MAX_SIDE
    for p in evald.glob("HR/*.png"):
        with Image.open(p) as im:
            assert im.size[0] % 12 == 0 and im.size[1] % 12 == 0
    assert _hashes(demo_calibration_dir(tmp_path / "b" / "calib", source=source)) == c_hash
    assert _hashes(demo_eval_dir(tmp_path / "b" / "eval", source=source)) == e_hash
    marker = read_marker(evald)
    assert marker["source"] == source and marker["kind"] == "eval"
    assert marker["files"] == e_hash


@pytest.mark.skipif(demo_image_source() != "skimage", reason="scikit-image sample photos not installed")
def test_skimage_names(tmp_path: Path) -> None:
    assert not set(CALIBRATION_IMAGES) & set(EVAL_IMAGES)
    evald = demo_eval_dir(tmp_path / "eval")
    assert sorted(p.stem for p in evald.glob("HR/*.png")) == sorted(EVAL_IMAGES)
    with Image.open(evald / "HR" / "camera.png") as im:
        assert im.mode == "L"  # gray HR, like Set14's bridge


def test_eval_dir_loads_at_every_scale(tmp_path: Path) -> None:
    evald = demo_eval_dir(tmp_path / "eval", source="procedural")
    for scale in (2, 3, 4):
        pairs = load_sr_dataset(evald, scale)
        assert len(pairs) == 3
        assert all(p.lr.shape[0] * scale == p.hr.shape[0] for p in pairs)


def test_idempotent_and_refreshes_outdated(tmp_path: Path) -> None:
    dest = demo_calibration_dir(tmp_path / "calib", source="procedural", max_side=128)
    first = next(dest.glob("*.png"))
    mtime = first.stat().st_mtime_ns
    demo_calibration_dir(dest, source="procedural", max_side=128)
    assert first.stat().st_mtime_ns == mtime  # nothing rewritten
    demo_calibration_dir(dest, source="procedural", max_side=96)  # outdated demo folder: replaced
    assert read_marker(dest)["max_side"] == 96
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_refuses_to_overwrite_a_user_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not a qdeploy demo folder"):
        demo_calibration_dir(tmp_path / "mine", source="procedural")
    assert (tmp_path / "mine" / "photo.png").read_bytes() == b"x"
    with pytest.raises(ValueError, match="source"):
        demo_eval_dir(tmp_path / "x", source="web")
