"""`qdeploy profile` through the real CLI group (error mapping, exit codes, stdout purity, files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from qdeploy_cli.main import cli

from qdeploy.graph.io import save_model

FAST = ["--warmup", "1", "--iterations", "4", "--threads", "1"]


def _conv_model(path: Path, seed: int) -> Path:
    """A 1x3x8x8 -> 1x2x8x8 conv+relu model with seeded weights (seeds 0 and 1 give close models)."""
    w = np.random.default_rng(0).normal(0, 0.3, 54)
    w += seed * 0.01 * np.random.default_rng(seed).normal(0, 1, 54)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[1, 3, 8, 8] x) => (float[1, 2, 8, 8] y)
    <float[2, 3, 3, 3] w = {{{", ".join(repr(float(v)) for v in w)}}}>
    {{
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        y = Relu (c)
    }}
    """
    return save_model(ir.serde.deserialize_model(onnx.parser.parse_model(text)), path)


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    models_dir = tmp_path / "models"
    return _conv_model(models_dir / "float.onnx", 0), _conv_model(models_dir / "near.onnx", 1)


def _invoke(*args: str | Path) -> object:
    return CliRunner().invoke(cli, ["profile", *map(str, args)], catch_exceptions=False)


def test_json_stdout_equals_the_written_file(models: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports" / "p.json"
    result = _invoke(*models, *FAST, "--json", "-o", out)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is exactly one JSON document: no table, no progress
    assert json.loads(out.read_text()) == data
    assert [p.name for p in out.parent.iterdir()] == ["p.json"]  # atomic write left no temp file
    assert f"wrote {out}" in result.stderr
    assert "SQNR dB" in result.stderr  # the table went to stderr
    assert data["reference"] == "float.onnx"
    assert [m["name"] for m in data["models"]] == ["float.onnx", "near.onnx"]
    assert data["models"][0]["accuracy"]["y"]["sqnr_db"] == "inf"
    assert isinstance(data["models"][1]["accuracy"]["y"]["sqnr_db"], float)
    assert data["config"]["iterations"] == 4 and data["config"]["threads"] == 1


def test_no_json_file_unless_asked(models: tuple[Path, Path], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = _invoke(models[0], *FAST, "--markdown", "table.md")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in work.iterdir()) == ["table.md"]  # no stray ./profile.json
    assert not (models[0].parent / "profile.json").exists()
    assert "p50 ms" in result.stdout  # without --json the table is on stdout
    assert "| float.onnx |" in (work / "table.md").read_text()


def test_time_budget_mode(models: tuple[Path, Path], tmp_path: Path) -> None:
    result = _invoke(*models, "--time-budget", "0.2", "--warmup", "1", "--threads", "1", "--json",
                     "-o", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["config"]["time_budget_s"] == 0.2
    assert all(m["latency_ms"]["count"] >= 5 for m in data["models"])


def test_sequential_flag(models: tuple[Path, Path], tmp_path: Path) -> None:
    result = _invoke(*models, *FAST, "--sequential", "--json", "-o", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["timing_mode"] == "sequential"


def test_wrong_input_shape_is_a_clean_error(models: tuple[Path, Path], tmp_path: Path) -> None:
    result = _invoke(models[0], *FAST, "--input-shape", "1,3,9,9", "-o", tmp_path / "p.json")
    assert result.exit_code != 0
    assert "error: input 'x' has shape (1, 3, 9, 9)" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "p.json").exists()


def test_unavailable_backend_names_the_package(models: tuple[Path, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider installed here")
    result = _invoke(models[0], "--backend", "ort-cuda", "-o", tmp_path / "p.json")
    assert result.exit_code == 3
    assert "onnxruntime-gpu" in result.stderr


def test_unknown_backend_lists_the_choices(models: tuple[Path, Path], tmp_path: Path) -> None:
    result = _invoke(models[0], "--backend", "tensorflow", "-o", tmp_path / "p.json")
    assert result.exit_code == 2
    assert "ort-cpu" in result.stderr and "ort-cuda" in result.stderr


@pytest.mark.parametrize("args", [["--input-shape", "1,a,3"], ["--input-range", "5,1"],
                                  ["--iterations", "3", "--time-budget", "1"], ["--iterations", "0"]])
def test_bad_options_are_usage_errors(models: tuple[Path, Path], args: list[str]) -> None:
    result = _invoke(models[0], *args)
    assert result.exit_code == 2
    assert "Usage:" in result.stderr or "Error:" in result.stderr


def test_help_teaches_reference_and_side_by_side() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("FIRST model is the reference", "median of per-round ratios", "--sequential",
                   "--input-shape", "--time-budget", "qdeploy profile model.onnx model.qdq.onnx"):
        assert needle in text, needle
