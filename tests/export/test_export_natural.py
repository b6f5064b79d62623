"""Export parity on natural images: photos for image inputs, random values for the rest.

The key model is GATED_NET: a conv on photos, but gated by exp(k * relu(high-pass energy - s0)), which
overflows to inf on uniform noise (noise has ~10x the high-frequency energy of any photo, measured:
photos <= 0.014, noise ~0.07 at 16..192 px). With noise inputs parity compares inf with inf and fails
although the export is correct; with photos it must pass.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from qdeploy_calib_data import render_procedural
from qdeploy_cli.export import export_cmd

from qdeploy.errors import ExportError, InputError
from qdeploy.export import ExportConfig, export_model
from qdeploy.export.natural import fit_photo, load_photos, parity_inputs

GATED_NET = """
import torch
import torch.nn.functional as F
from torch import nn


class Gated(nn.Module):
    # A gate exp(K * relu(energy - S0)): exactly 1 on photos (energy <= 0.014), inf on noise (~0.07).
    K, S0 = 2000.0, 0.02

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        high = x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        energy = (high * high).mean(dim=(1, 2, 3), keepdim=True)
        return self.conv(x) * torch.exp(self.K * torch.relu(energy - self.S0))


class Vector(nn.Module):
    def forward(self, v):
        return v * 2.0


def build():
    torch.manual_seed(0)
    return Gated().eval()


def build_vector():
    return Vector()
"""


@pytest.fixture
def gated_file(tmp_path: Path) -> Path:
    path = tmp_path / "gated.py"
    path.write_text(textwrap.dedent(GATED_NET))
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(render_procedural(10 + i, 90, 120)).save(folder / f"img{i}.png")
    return folder


def _config(spec: str, out: Path, **kw) -> ExportConfig:
    return ExportConfig(spec=spec, output=out, input_shapes=((1, 3, 64, 64),), dynamic_hw=True, threads=1, **kw)


def test_image_net_that_explodes_on_noise_passes_on_photos(gated_file: Path, tmp_path: Path) -> None:
    result = export_model(_config(f"{gated_file}:build", tmp_path / "gated.onnx"))
    assert result.parity.passed
    fed = result.parity.inputs
    assert fed.startswith("parity on 2 ") and "64x64 and 128x192" in fed and "range 0..1" in fed
    manifest = json.loads(result.manifest.read_text())
    assert fed in json.dumps(manifest)


def test_same_net_fails_parity_on_uniform_noise(gated_file: Path, tmp_path: Path) -> None:
    """The pre-fix behaviour (random inputs) rejects the correct export: what the photos fix."""
    with pytest.raises(ExportError, match="uniform random") as exc:
        export_model(_config(f"{gated_file}:build", tmp_path / "noise.onnx", random_parity=True))
    assert "--data" in exc.value.hint
    assert not (tmp_path / "noise.onnx").exists()


def test_cli_data_folder_feeds_the_users_images(gated_file: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    args = [f"{gated_file}:build", "--input-shape", "1,3,64,64", "--dynamic-hw", "--data", str(image_dir),
            "-o", str(out), "--json"]
    result = CliRunner().invoke(export_cmd, args)
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["parity"]
    assert parity["passed"] and f"2 images from {image_dir}" in parity["inputs"]
    plain = CliRunner().invoke(export_cmd, args[:-1])
    assert plain.exit_code == 0 and "fed" in plain.stdout and "images from" in plain.stdout


def test_non_image_inputs_stay_random(gated_file: Path, tmp_path: Path) -> None:
    result = export_model(ExportConfig(spec=f"{gated_file}:build_vector", output=tmp_path / "v.onnx",
                                       input_shapes=((2, 16),), threads=1))
    assert result.parity.passed and result.parity.inputs == "parity on uniform random inputs in 0..1"


def test_mixed_inputs_and_luma_and_range() -> None:
    gen = torch.Generator().manual_seed(0)
    sets = [(torch.rand((2, 1, 20, 30), generator=gen), torch.rand((1, 1), generator=gen))]
    (fed,), text = parity_inputs(sets, (0.0, 255.0))
    image, gain = fed
    assert image.shape == (2, 1, 20, 30) and image.dtype == torch.float32
    assert float(image.min()) >= 16.0 and float(image.max()) <= 235.0  # BT.601 luma, 0..255 scale
    assert not torch.equal(image[0], image[1])  # one photo per batch item
    assert torch.equal(gain, sets[0][1])
    assert "20x30" in text and "range 0..255" in text and "other inputs: uniform random" in text
    same, text = parity_inputs(sets, (0.0, 1.0), photos=False)
    assert same[0] is sets[0] and "uniform random" in text


def test_fit_photo_covers_and_crops() -> None:
    img = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
    for h, w in ((16, 16), (40, 60), (100, 30), (7, 200)):
        assert fit_photo(img, h, w).shape == (h, w, 3)


def test_data_errors_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as exc:
        load_photos(tmp_path / "nope", 1)
    assert "--data" in exc.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_photos(tmp_path / "empty", 1)
