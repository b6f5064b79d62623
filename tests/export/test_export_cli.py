"""`qdeploy export` through click's CliRunner: summary, --json purity, fallback line, help, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from qdeploy_cli.export import export_cmd

from qdeploy.errors import ExportError, InputError


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(export_cmd, [str(a) for a in args])


def test_summary_for_zoo_model(tmp_path: Path) -> None:
    out = tmp_path / "tiny" / "model.onnx"
    result = _invoke("tiny-sr", "--dynamic-hw", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and (out.parent / "manifest.json").is_file()
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert "exporter dynamo, opset 18, simplified with onnxsim" in text
    assert "input float32 [1, 3, height, width]" in text
    assert "SQNR" in text and "1x3x16x16, 1x3x32x48" in text
    assert "KiB" in text


def test_json_output_is_pure(model_file: Path, tmp_path: Path) -> None:
    result = _invoke(f"{model_file}:build", "--input-shape", "1,3,8,8", "--no-simplify", "--opset", "17",
                     "--json", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["exporter"] == "dynamo" and data["opset"] == 17 and data["simplified"] is False
    assert data["inputs"] == [{"name": "input", "shape": [1, 3, 8, 8], "dtype": "float32"}]
    assert data["parity"]["passed"] is True
    assert data["bytes"] == (tmp_path / "m.onnx").stat().st_size


def test_fallback_is_printed(model_file: Path, tmp_path: Path) -> None:
    result = _invoke(f"{model_file}:build_branchy", "--input-shape", "1,3,8,8", "-o", tmp_path / "b.onnx")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "exported with the TorchScript exporter because the dynamo exporter failed:" in text
    assert "GuardOnDataDependentSymNode" in text


def test_several_input_shapes(model_file: Path, tmp_path: Path) -> None:
    result = _invoke(f"{model_file}:build_two_inputs", "--input-shape", "1,3,4,4;1,1,1,1", "--json",
                     "-o", tmp_path / "two.onnx")
    assert result.exit_code == 0, result.output
    assert [i["shape"] for i in json.loads(result.stdout)["inputs"]] == [[1, 3, 4, 4], [1, 1, 1, 1]]


def test_input_range_option_reaches_manifest(tmp_path: Path) -> None:
    result = _invoke("tiny-sr", "--input-range", "0,255", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"]["m.onnx"]["input_range"] == [0.0, 255.0]


def test_help_teaches_spec_forms() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for form in ("path/to/file.py:build", "package.module:build", "model.pt2", "abpn-x3", "tiny-sr"):
        assert form in result.output
    assert "qdeploy export abpn-x3 --dynamic-hw -o exports/abpn/model.onnx" in result.output


@pytest.mark.parametrize(("args", "text"), [
    (["tiny-sr", "--opset", "16", "-o", "m.onnx"], "x>=17"),
    (["tiny-sr", "--input-shape", "1,3,0,4", "-o", "m.onnx"], "positive integer"),
    (["tiny-sr", "--input-shape", "x:1,3,4,4", "-o", "m.onnx"], "positional"),
    (["tiny-sr", "--exporter", "onnx", "-o", "m.onnx"], "'onnx' is not one of"),
    (["tiny-sr", "--max-abs-rel", "0", "-o", "m.onnx"], "x>0.0"),
    (["tiny-sr"], "Missing option '-o'"),
])
def test_usage_errors(args: list[str], text: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2
    assert text in result.output


def test_library_errors_propagate_for_main_to_handle(tmp_path: Path) -> None:
    result = _invoke("no-such-model", "-o", tmp_path / "m.onnx")
    assert isinstance(result.exception, InputError)
    result = _invoke("tiny-sr", "--min-sqnr", "1e6", "-o", tmp_path / "m.onnx")
    assert isinstance(result.exception, ExportError)
    assert not (tmp_path / "m.onnx").exists()


def test_main_cli_turns_errors_into_message_and_exit_code(tmp_path: Path) -> None:
    from qdeploy_cli.main import cli

    result = CliRunner().invoke(cli, ["export", "no-such-model", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == InputError.exit_code
    assert "unknown model SPEC 'no-such-model'" in result.stderr
    assert "tiny-sr" in result.stderr


DURATION = r"(under )?[\d.]+ (ms|s|min|h)"


def test_export_says_each_stage_and_the_parity_estimate(model_file: Path, tmp_path: Path) -> None:
    from qdeploy_cli.main import cli

    args = ["export", f"{model_file}:build", "--input-shape", "1,3,8,8", "--dynamic-hw", "-o", tmp_path / "m.onnx"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    stages = [re.compile(rf"^export: float forward of {re.escape(str(model_file))}:build on 1x3x8x8: {DURATION}; "
                         r"exporting to ONNX \(dynamo exporter: .*minutes for a large transformer\)$"),
              re.compile(r"^export: simplifying with onnxsim \(\d+ nodes\)$"),
              re.compile(r"^export: parity check, ONNX Runtime CPU vs PyTorch on 2 input set\(s\)$"),
              re.compile(rf"^parity check: 2 input sets, ~{DURATION} each -> about {DURATION} "
                         r"\(first input set measured, scaled by input size\)$")]
    found = [[k for k, line in enumerate(lines) if stage.match(line)] for stage in stages]
    assert all(len(at) == 1 for at in found), result.stderr  # each said once
    assert found == sorted(found), result.stderr  # in the order the stages run
    quiet = CliRunner().invoke(cli, [str(a) for a in [*args[:-1], tmp_path / "q.onnx", "--json"]])
    assert quiet.exit_code == 0 and "export:" not in quiet.stderr and json.loads(quiet.stdout)["parity"]
