"""MATLAB-bicubic port vs EVERY LR file shipped with Set5 and Set14 (x2, x3, x4): must be bit-exact.

These LR files were made by MATLAB ``imresize(modcrop(HR, s), 1/s, 'bicubic')``; reproducing them bit for
bit is what lets us generate LR for B100/Urban100 (HR only) and still match published numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sr_helpers import SR_DATA, needs_shared

from qdeploy.sr.dataset import load_rgb
from qdeploy.sr.imresize import bicubic_downscale, imresize, modcrop

CASES = [(ds, s) for ds in ("Set5", "Set14") for s in (2, 3, 4)]


@needs_shared
@pytest.mark.parametrize(("dataset", "scale"), CASES)
def test_bicubic_downscale_matches_every_shipped_lr_file(dataset: str, scale: int) -> None:
    lr_files = sorted((SR_DATA / dataset / "LR_bicubic" / f"X{scale}").glob("*.png"))
    assert len(lr_files) == {"Set5": 5, "Set14": 14}[dataset]
    for lr_file in lr_files:
        name = lr_file.stem[: -len(f"x{scale}")]
        hr = np.asarray(Image.open(SR_DATA / dataset / "HR" / f"{name}.png"))  # 2-D for gray `bridge`
        want = np.asarray(Image.open(lr_file))
        got = bicubic_downscale(hr, scale)
        assert got.dtype == np.uint8
        assert got.shape == want.shape, name
        n_diff = int(np.count_nonzero(got != want))
        assert n_diff == 0, f"{dataset}/{name} x{scale}: {n_diff} pixels differ"


@needs_shared
def test_gray_expansion_commutes_with_bicubic() -> None:
    """Set14 `bridge` is mode L: resizing the 3-channel expansion equals expanding the resized gray."""
    hr_gray = np.asarray(Image.open(SR_DATA / "Set14" / "HR" / "bridge.png"))
    assert hr_gray.ndim == 2
    lr_rgb = bicubic_downscale(load_rgb(SR_DATA / "Set14" / "HR" / "bridge.png"), 3)
    lr_gray = bicubic_downscale(hr_gray, 3)
    for c in range(3):
        np.testing.assert_array_equal(lr_rgb[..., c], lr_gray)


def test_modcrop_and_upscale_sizes() -> None:
    img = np.zeros((37, 50, 3), np.uint8)
    assert modcrop(img, 3).shape == (36, 48, 3)
    assert imresize(modcrop(img, 3), 3.0).shape == (108, 144, 3)
    flat = np.full((12, 12, 3), 77, np.uint8)
    np.testing.assert_array_equal(imresize(flat, 1 / 3), np.full((4, 4, 3), 77, np.uint8))
