"""`qdeploy quantize-weights`: a real MLP export, INT4 blocks, a smaller file, and an ORT session that runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from click.testing import CliRunner
from qdeploy_cli.main import cli

from qdeploy.evaluate.metrics import sqnr_db

MIN_SQNR_DB = 15.0
"""INT4 weights (block 32) on a random-weight MLP; trained weights do better."""

MIN_SIZE_RATIO = 4.0


def _mlp(path: Path) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128)).eval()
    torch.onnx.export(model, (torch.rand(4, 128),), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    return model


def test_quantize_weights_cli(tmp_path: Path) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp.int4w.onnx"
    result = CliRunner().invoke(cli, ["quantize-weights", str(tmp_path / "mlp.onnx"), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["input_bytes"] / info["output_bytes"] >= MIN_SIZE_RATIO
    assert len(info["summary"]["quantized"]) == 2
    x = np.random.default_rng(0).random((4, 128), dtype=np.float32)
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert sqnr_db(ref, y) >= MIN_SQNR_DB


def test_quantize_weights_cli_refuses_overwrite_and_missing(tmp_path: Path) -> None:
    _mlp(tmp_path / "mlp.onnx")
    same = CliRunner().invoke(cli, ["quantize-weights", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "mlp.onnx")])
    assert same.exit_code != 0 and "overwrite" in same.output
    missing = CliRunner().invoke(cli, ["quantize-weights", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")])
    assert missing.exit_code != 0 and "nope.onnx" in missing.output
    assert not (tmp_path / "o.onnx").exists()
