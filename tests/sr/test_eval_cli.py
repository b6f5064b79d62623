"""`qdeploy eval sr` through click's CliRunner: table, --json purity, help text, error paths."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from qdeploy_cli.eval import eval_group

from qdeploy.errors import InputError


def _run(*args: str):
    return CliRunner().invoke(eval_group, ["sr", *args])


def test_table_shows_models_bicubic_and_delta(tiny_dataset: Path, write_upscaler) -> None:
    a, b = write_upscaler("float.onnx", 2), write_upscaler("qdq.onnx", 2, offset=2.0)
    result = _run(str(a), str(b), "--dataset", str(tiny_dataset), "--scale", "2", "--threads", "1",
                  "--rgb-psnr", "--per-image")
    assert result.exit_code == 0, result.output
    for text in ("float.onnx", "qdq.onnx", "bicubic", "PSNR-Y", "SSIM-Y", "RGB PSNR", "b_gray"):
        assert text in result.stdout
    assert "+0.000" in result.stdout  # the first model's delta vs itself


def test_json_is_the_only_stdout(tiny_dataset: Path, write_upscaler) -> None:
    model = write_upscaler("float.onnx", 2)
    result = _run(str(model), "--dataset", str(tiny_dataset), "--scale", "2", "--json", "--max-images", "1",
                  "--range", "0-255")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["scale"] == 2 and doc["n_images"] == 1 and doc["value_range"] == 255
    assert doc["models"][0]["label"] == "float.onnx"
    assert doc["models"][0]["delta_psnr_y"] == 0.0
    assert doc["protocol"]["shave"] == 2


def test_bicubic_only_run(tiny_dataset: Path) -> None:
    result = _run("--dataset", str(tiny_dataset), "--scale", "3", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["models"] == [] and doc["bicubic"]["psnr_y"] > 20


def test_help_teaches_layout_protocol_and_example() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    for text in ("HR/<name>.png", "LR_bicubic/X<S>", "Y channel", "shaving S", "ΔPSNR",
                 "abpn.onnx abpn.qdq.onnx"):
        assert text in result.output, text


def test_missing_dataset_is_an_input_error(tmp_path: Path) -> None:
    result = _run("--dataset", str(tmp_path / "nope"), "--scale", "3")
    assert isinstance(result.exception, InputError)
    assert "HR/*.png" in result.exception.hint
    (tmp_path / "empty").mkdir()
    result = _run("--dataset", str(tmp_path / "empty"), "--scale", "3")
    assert isinstance(result.exception, InputError) and "no HR/" in result.exception.message


def test_bad_options_are_usage_errors(tiny_dataset: Path) -> None:
    assert _run("--dataset", str(tiny_dataset), "--scale", "0").exit_code == 2
    assert _run("--dataset", str(tiny_dataset), "--scale", "3", "--range", "2").exit_code == 2
