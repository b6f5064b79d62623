"""Loading benchmark folders: LR from files vs generated, gray/palette/alpha handling, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qdeploy_calib_data import render_procedural
from sr_helpers import SR_DATA, needs_shared

from qdeploy.errors import InputError
from qdeploy.sr.dataset import load_sr_dataset
from qdeploy.sr.imresize import bicubic_downscale


def test_generated_lr_and_gray_expansion(tiny_dataset: Path) -> None:
    pairs = load_sr_dataset(tiny_dataset, 3)
    assert [p.name for p in pairs] == ["a_rgb", "b_gray"]
    assert all(p.lr_source == "bicubic" for p in pairs)
    a, g = pairs
    assert a.hr.shape == (37, 50, 3) and a.lr.shape == (12, 16, 3)
    np.testing.assert_array_equal(a.lr, bicubic_downscale(a.hr, 3))
    assert g.hr.shape == (40, 36, 3) and g.lr.shape == (13, 12, 3)
    for img in (g.hr, g.lr):  # gray expanded to three equal channels
        np.testing.assert_array_equal(img[..., 0], img[..., 1])
        np.testing.assert_array_equal(img[..., 0], img[..., 2])


def test_lr_files_are_used_when_present(tiny_dataset: Path) -> None:
    """Files written in the benchmark layout are read back (lr_source 'file'), pixel-identical here."""
    generated = load_sr_dataset(tiny_dataset, 2)
    lr_dir = tiny_dataset / "LR_bicubic" / "X2"
    lr_dir.mkdir(parents=True)
    for p in generated:
        Image.fromarray(p.lr).save(lr_dir / f"{p.name}x2.png")
    from_files = load_sr_dataset(tiny_dataset, 2)
    assert [p.lr_source for p in from_files] == ["file", "file"]
    for g, f in zip(generated, from_files):
        np.testing.assert_array_equal(g.lr, f.lr)
    assert [p.lr_source for p in load_sr_dataset(tiny_dataset, 3)] == ["bicubic", "bicubic"]  # other scale


@needs_shared
def test_set5_lr_files_equal_generated_lr(tmp_path: Path) -> None:
    """The shipped Set5 X3 LR files and LR made from HR (HR-only copy of the folder) are identical."""
    (tmp_path / "Set5").mkdir()
    (tmp_path / "Set5" / "HR").symlink_to(SR_DATA / "Set5" / "HR", target_is_directory=True)
    files = load_sr_dataset(SR_DATA / "Set5", 3)
    made = load_sr_dataset(tmp_path / "Set5", 3)
    assert {p.lr_source for p in files} == {"file"} and {p.lr_source for p in made} == {"bicubic"}
    for f, m in zip(files, made):
        assert f.name == m.name
        np.testing.assert_array_equal(f.lr, m.lr)


@needs_shared
def test_set14_gray_bridge_is_expanded() -> None:
    pairs = {p.name: p for p in load_sr_dataset(SR_DATA / "Set14", 4)}
    bridge = pairs["bridge"]
    assert bridge.lr_source == "file"
    assert bridge.hr.shape == (512, 512, 3) and bridge.lr.shape == (128, 128, 3)
    np.testing.assert_array_equal(bridge.lr[..., 0], bridge.lr[..., 2])


def test_palette_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    (tmp_path / "HR").mkdir()
    rgb = render_procedural(4, 24, 24)
    Image.fromarray(rgb).convert("P").save(tmp_path / "HR" / "p.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "HR" / "rgba.png")
    pairs = load_sr_dataset(tmp_path, 2)
    assert [p.hr.shape for p in pairs] == [(24, 24, 3), (24, 24, 3)]
    np.testing.assert_array_equal(pairs[1].hr, rgb)


def test_max_images(tiny_dataset: Path) -> None:
    assert [p.name for p in load_sr_dataset(tiny_dataset, 2, max_images=1)] == ["a_rgb"]


def test_missing_or_empty_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as exc:
        load_sr_dataset(tmp_path / "nope", 3)
    assert "HR/*.png" in exc.value.hint
    with pytest.raises(InputError, match="no HR/ subfolder"):
        load_sr_dataset(tmp_path, 3)
    (tmp_path / "HR").mkdir()
    with pytest.raises(InputError, match="no PNG files"):
        load_sr_dataset(tmp_path, 3)


def test_lr_file_of_wrong_size_is_rejected(tiny_dataset: Path) -> None:
    lr_dir = tiny_dataset / "LR_bicubic" / "X2"
    lr_dir.mkdir(parents=True)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(lr_dir / "a_rgbx2.png")
    with pytest.raises(InputError, match=r"does not belong|modcropped"):
        load_sr_dataset(tiny_dataset, 2)
