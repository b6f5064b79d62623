"""The issue-11 zoo families (imdn-x2, pan-x3, esa-x4, fsrcnn-y-x2, tinycls): shipped weights load strictly,
their records say where they came from, and ``qdeploy export NAME --dynamic-hw`` matches PyTorch."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from qdeploy_calib_data import render_procedural
from qdeploy_cli.export import export_cmd
from qdeploy_models.zoo import build_module, get_entry

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.sr.imresize import bicubic_downscale, imresize

NAMES = ("imdn-x2", "pan-x3", "esa-x4", "fsrcnn-y-x2", "tinycls")
SOURCE_NOTE = "trained by qdeploy, not a public checkpoint"
MIN_SQNR_DB = 60.0
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def _weights(name: str) -> resources.abc.Traversable:
    return resources.files("qdeploy_models") / "weights" / str(get_entry(name).weights)


def _photo(name: str, h: int, w: int) -> torch.Tensor:
    """A synthetic photo in the entry's channels and value range (Y in [16, 235] for one channel)."""
    entry = get_entry(name)
    img = render_procedural(7, h, w).astype(np.float64)
    if entry.default_input_shape[1] == 1:
        img = (img @ _Y_WEIGHTS + 16.0)[..., None]
    x = img.transpose(2, 0, 1)[None] / 255.0 * entry.input_range[1]
    return torch.from_numpy(x.astype(np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_load_strictly(name: str) -> None:
    if not _weights(name).is_file():
        pytest.fail(f"{name}: weights/{get_entry(name).weights} is missing")
    with resources.as_file(_weights(name)) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    module = build_module(name)
    assert set(state) == set(module.state_dict())
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_weights_record_says_who_trained_them(name: str) -> None:
    record_file = str(get_entry(name).weights).removesuffix(".pt") + ".json"
    record = json.loads((resources.files("qdeploy_models") / "weights" / record_file).read_text())
    assert record["source"] == SOURCE_NOTE
    assert record["iterations"] > 0 and record["command"].startswith("python scripts/train_")
    assert record["parameters"] == sum(p.numel() for p in build_module(name).parameters())


@pytest.mark.parametrize(("name", "size"), [("imdn-x2", 24), ("pan-x3", 24), ("esa-x4", 32),
                                            ("fsrcnn-y-x2", 24), ("tinycls", 32)])
def test_cli_export_matches_pytorch(name: str, size: int, tmp_path: Path) -> None:
    """The CLI's own parity check passes, and ORT agrees with PyTorch at a third, non-square size."""
    import onnxruntime as ort

    channels = get_entry(name).default_input_shape[1]
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(export_cmd, [name, "--input-shape", f"1,{channels},{size},{size}",
                                             "--dynamic-hw", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"]["passed"] is True
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    x = _photo(name, size + 4, size + 10)
    with torch.no_grad():
        ref = build_module(name)(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == ref.shape
    assert sqnr_db(ref, got) >= MIN_SQNR_DB


@pytest.mark.parametrize(("name", "scale"), [("imdn-x2", 2), ("pan-x3", 3), ("esa-x4", 4), ("fsrcnn-y-x2", 2)])
def test_sr_models_beat_bicubic(name: str, scale: int) -> None:
    """A cheap sanity check that the shipped weights are trained: better than bicubic on a real photo crop.

    (Not on render_procedural: its random texture is unlike natural images, and SR nets trained on photos
    lose to bicubic there.)"""
    skimage_data = pytest.importorskip("skimage.data")
    entry = get_entry(name)
    hr = skimage_data.astronaut()[100 : 100 + 48 * scale, 100 : 100 + 48 * scale]
    lr = bicubic_downscale(hr, scale)
    luma = entry.default_input_shape[1] == 1
    to_input = (lambda a: (a.astype(np.float64) @ _Y_WEIGHTS + 16.0)[..., None]) if luma else (lambda a: a)
    x = torch.from_numpy((to_input(lr).transpose(2, 0, 1)[None] / 255.0 * entry.input_range[1]).astype(np.float32))
    with torch.no_grad():
        sr = build_module(name)(x)[0].numpy().transpose(1, 2, 0) * 255.0 / entry.input_range[1]
    target = to_input(hr).astype(np.float64)
    mse = lambda a: float(np.mean((np.clip(np.round(a), 0, 255) - target)[scale:-scale, scale:-scale] ** 2))
    assert mse(sr) < mse(to_input(imresize(lr, scale)).astype(np.float64))


def test_esa_runs_at_its_smallest_size() -> None:
    with torch.no_grad():
        assert tuple(build_module("esa-x4")(torch.full((1, 3, 17, 17), 128.0)).shape) == (1, 3, 68, 68)


def test_tinycls_gives_logits() -> None:
    with torch.no_grad():
        assert tuple(build_module("tinycls")(torch.rand(2, 3, 32, 32)).shape) == (2, 10)
