"""The whole path through the CLI: export tiny-sr -> calibrate -> profile -> eval sr (real files, real ORT).

One test, because each step consumes the previous step's files; every step's exit code, files and
manifest entries are checked where they are made.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image
from qdeploy_calib_data import render_procedural
from qdeploy_cli.main import cli

from qdeploy.artifacts import file_sha256

MIN_QDQ_SQNR_DB = 25.0
"""tiny-sr (seeded random weights) at INT8 on ORT's real kernels measures ~35-40 dB vs its float export."""
MIN_BICUBIC_PSNR_Y_DB = 20.0
"""Sanity of the evaluation itself on smooth procedural images (bicubic x2 measures far above this)."""
MAX_DELTA_PSNR_DB = 0.5
"""tiny-sr has random weights (PSNR ~8 dB: no upscaler), so the check is what quantization owes: the INT8
row stays within this of the float row."""


def _cli(*args: str | Path) -> Result:
    result = CliRunner().invoke(cli, list(map(str, args)))
    assert result.exit_code == 0, f"qdeploy {' '.join(map(str, args))}\n{result.output}"
    return result


def _write_images(folder: Path, seeds: range, hw: tuple[int, int]) -> Path:
    folder.mkdir(parents=True)
    for seed in seeds:
        Image.fromarray(render_procedural(seed, *hw)).save(folder / f"img{seed}.png")
    return folder


def _manifest_entry(artifact: Path) -> dict:
    return json.loads((artifact.parent / "manifest.json").read_text())["artifacts"][artifact.name]


@pytest.fixture
def sr_dataset(tmp_path: Path) -> Path:
    """A 2-image SR benchmark folder (HR only; LR made with MATLAB bicubic)."""
    root = tmp_path / "dataset"
    _write_images(root / "HR", range(100, 102), (36, 44))
    return root


def test_export_calibrate_profile_eval(tmp_path: Path, sr_dataset: Path) -> None:
    exports = tmp_path / "exports"
    model, qdq = exports / "model.onnx", exports / "model.qdq.onnx"
    calib = _write_images(tmp_path / "calib", range(4), (40, 40))

    export = json.loads(_cli("export", "tiny-sr", "--dynamic-hw", "--exporter", "torchscript", "--json",
                             "-o", model).stdout)
    assert model.is_file() and export["manifest"] == str(exports / "manifest.json")
    assert _manifest_entry(model)["sha256"] == file_sha256(model)

    cal = json.loads(_cli("calibrate", model, "--data", calib, "--range", "0-1", "--crop", "24",
                          "--method", "mse", "--preset", "ort-cpu-int8", "--threads", "1", "--json",
                          "-o", qdq).stdout)
    assert cal["output"] == str(qdq) and Path(cal["cache"]).is_file()
    assert cal["integer_kernels"]["integer_ops"]["QLinearConv"] == 3  # tiny-sr's three convs
    entry = _manifest_entry(qdq)
    assert entry["sha256"] == file_sha256(qdq) and entry["source_sha256"] == file_sha256(model)
    assert entry["method"] == "mse" and entry["data"]["count"] == 4
    assert _manifest_entry(model)["sha256"] == file_sha256(model)  # the export's entry survived the merge

    report = tmp_path / "reports" / "profile.json"
    prof = json.loads(_cli("profile", model, qdq, "--input-shape", "1,3,16,16", "--iterations", "3",
                           "--warmup", "1", "--threads", "1", "--json", "-o", report).stdout)
    assert json.loads(report.read_text()) == prof
    (ref, quant) = prof["models"]
    assert ref["name"] == "model.onnx" and quant["name"] == "model.qdq.onnx"
    (accuracy,) = quant["accuracy"].values()
    assert isinstance(accuracy["sqnr_db"], float) and math.isfinite(accuracy["sqnr_db"])
    assert accuracy["sqnr_db"] >= MIN_QDQ_SQNR_DB

    ev = json.loads(_cli("eval", "sr", model, qdq, "--dataset", sr_dataset, "--scale", "2", "--range", "1",
                         "--threads", "1", "--json").stdout)
    assert ev["n_images"] == 2 and [m["label"] for m in ev["models"]] == ["model.onnx", "model.qdq.onnx"]
    float_row, int8_row = ev["models"]
    assert ev["bicubic"]["psnr_y"] >= MIN_BICUBIC_PSNR_Y_DB
    assert math.isfinite(float_row["psnr_y"]) and math.isfinite(int8_row["psnr_y"])
    assert abs(int8_row["psnr_y"] - float_row["psnr_y"]) <= MAX_DELTA_PSNR_DB
    assert sorted(p.name for p in exports.iterdir()) == [  # no temp files anywhere
        "manifest.json", "model.onnx", "model.qdq.calib.json", "model.qdq.onnx"]
