"""scripts/train_sr.py on a tiny synthetic data folder: luma training runs, and a stopped-then-resumed run ends
with bit-identical weights (what makes time-boxed training on a shared machine safe). Also FSRCNN's bicubic
init, which the short CPU training depends on."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from qdeploy_calib_data import render_procedural
from qdeploy_models.fsrcnn import FSRCNN

from qdeploy.sr.imresize import bicubic_downscale, imresize
from qdeploy.sr.metrics import y_channel

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_sr.py"
MIN_INIT_PSNR_DB = 40.0
"""FSRCNN's fresh output vs MATLAB bicubic (interior): only the other channels' 1e-3 noise differs."""


@pytest.fixture(scope="module")
def train_sr() -> Iterator[ModuleType]:
    """The script as a module (registered while in use: its dataclass needs ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location("train_sr", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_sr"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("train_sr", None)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """BSD200/ with 11 images (10 become the held-out set) and T91/ with one, all 136x136."""
    for i in range(12):
        folder = tmp_path / "data" / ("T91" if i == 11 else "BSD200")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_procedural(i, 136, 136)).save(folder / f"img{i:02d}.png")
    return tmp_path / "data"


def _run(train_sr: ModuleType, data: Path, out: Path, *extra: str) -> None:
    train_sr.train(train_sr.parse_args([
        "--model", "fsrcnn-y-x2", "--data", str(data), "--iters", "4", "--batch", "2", "--patch", "16",
        "--eval-every", "2", "--out", str(out), "--ckpt", str(out.with_suffix(".ckpt")), *extra]))


def test_stop_and_resume_equals_one_run(train_sr: ModuleType, data_dir: Path, tmp_path: Path) -> None:
    _run(train_sr, data_dir, tmp_path / "a.pt")
    _run(train_sr, data_dir, tmp_path / "b.pt", "--stop-after", "3")
    assert not (tmp_path / "b.json").exists()  # the record is written only when the run completes
    _run(train_sr, data_dir, tmp_path / "b.pt", "--resume")
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["iterations"] == 4 and record["source"] == train_sr.SOURCE_NOTE
    assert np.isfinite(record["log"][-1]["val_y_psnr"])


def test_luma_pairs_are_y_of_the_rgb_pair(train_sr: ModuleType) -> None:
    hr = render_procedural(1, 30, 31)
    lr_y, hr_y = train_sr.make_pair(hr, train_sr.Task(scale=2, gain=255.0, luma=True))
    assert lr_y.shape == (15, 15, 1) and hr_y.shape == (30, 30, 1)
    np.testing.assert_allclose(lr_y[..., 0], y_channel(bicubic_downscale(hr, 2)), rtol=0, atol=1e-4)


def test_fsrcnn_starts_as_bicubic() -> None:
    torch.manual_seed(0)
    hr = render_procedural(2, 64, 64)
    lr = bicubic_downscale(hr, 2)
    with torch.no_grad():
        sr = FSRCNN()(torch.from_numpy(y_channel(lr) / 255.0).float()[None, None])[0, 0].numpy() * 255.0
    bicubic = y_channel(imresize(lr, 2))
    err = (sr - bicubic)[8:-8, 8:-8]
    assert 10 * np.log10(255.0**2 / np.mean(err**2)) > MIN_INIT_PSNR_DB
