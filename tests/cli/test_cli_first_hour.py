"""The paper cuts of a user's first hour: JSON errors under --json, -v after the subcommand, one range
spelling accepted everywhere, "+N more" on cut lists (one line per reason), calibrate's range table
readable at 80 columns, install hints that name the extra, and the demo's latency ratio matching its own
p50 columns."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from qdeploy_cli._calibrate_summary import _range_table
from qdeploy_cli._common import PixelRange, parse_range
from qdeploy_cli.eval import DATASET_HINT
from qdeploy_cli.main import _ErrorHandlingGroup, cli
from qdeploy_cli.weights import _skipped_lines
from rich.console import Console

from qdeploy.demo import demo_rows
from qdeploy.errors import BackendUnavailableError, InputError
from qdeploy.graph.io import save_model
from qdeploy.types import TensorRange

FAST = ["--warmup", "1", "--iterations", "3", "--threads", "1"]


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    text = """<ir_version: 8, opset_import: ["" : 17]>
    net (float[1, 3, 8, 8] x) => (float[1, 3, 8, 8] y) { y = Relu (x) }"""
    return save_model(ir.serde.deserialize_model(onnx.parser.parse_model(text)), tmp_path / "m.onnx")


@pytest.fixture
def root_level() -> Iterator[None]:
    """Restore the root logger's level after a test that raises verbosity."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def _group(callback: object) -> click.Group:
    """The real error-handling group with one command ``boom [--json]`` that runs ``callback``."""
    group = _ErrorHandlingGroup("qdeploy")
    group.add_command(click.Command("boom", callback=callback,
                                    params=[click.Option(["--json", "as_json"], is_flag=True)]))
    return group


def _raise(error: Exception):
    def boom(as_json: bool) -> None:
        raise error

    return boom


@pytest.mark.parametrize(("error", "code"), [
    (InputError("bad file x.onnx", "check the path"), 2),
    (BackendUnavailableError("ort-cuda is not installed", "pip install onnxruntime-gpu"), 3),
])
def test_json_mode_errors_are_one_json_object_on_stdout(error: Exception, code: int) -> None:
    result = CliRunner().invoke(_group(_raise(error)), ["boom", "--json"])
    assert result.exit_code == code
    assert json.loads(result.stdout) == {"error": error.message, "hint": error.hint, "exit_code": code,
                                         "kind": type(error).__name__}
    assert f"error: {error.message}" in result.stderr  # people still read stderr


def test_without_json_errors_stay_text_only() -> None:
    result = CliRunner().invoke(_group(_raise(InputError("bad", "fix it"))), ["boom"])
    assert result.exit_code == 2 and result.stdout == ""


def test_real_commands_emit_json_errors(tmp_path: Path, tiny_model: Path) -> None:
    result = CliRunner().invoke(cli, ["profile", str(tmp_path / "missing.onnx"), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"].startswith("model file not found")
    usage = CliRunner().invoke(cli, ["profile", str(tiny_model), "--json", "--input-range", "5-1"])
    doc = json.loads(usage.stdout)
    assert usage.exit_code == 2 and doc["kind"] == "BadParameter" and "--input-range" in doc["error"]
    assert doc["hint"] == "see `qdeploy profile --help`"


@pytest.mark.usefixtures("root_level")
@pytest.mark.parametrize(("args", "level"), [
    (["boom", "-v"], logging.INFO), (["boom", "-vv"], logging.DEBUG), (["-v", "boom", "--verbose"], logging.DEBUG),
    (["-v", "boom"], logging.INFO),
])
def test_verbose_works_after_the_subcommand(monkeypatch: pytest.MonkeyPatch, args: list[str], level: int) -> None:
    seen: list[int] = []
    logging.getLogger().setLevel(logging.WARNING)
    monkeypatch.setitem(cli.commands, "boom", click.Command("boom", callback=lambda: seen.append(
        logging.getLogger().level)))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert seen == [level]


def test_every_subcommand_accepts_verbose() -> None:
    for path in (["profile"], ["calibrate"], ["eval", "sr"], ["demo"]):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert "-v, --verbose" in result.output, path


@pytest.mark.parametrize("text", ["0-255", "0,255", "0..255", " 0 .. 255 "])
def test_every_range_spelling_is_accepted(text: str) -> None:
    assert parse_range(text) == (0.0, 255.0)
    assert PixelRange().convert(text, None, None) == 255


def test_negative_ranges_and_eval_shorthands() -> None:
    assert parse_range("-1-1") == (-1.0, 1.0) and parse_range("-1..-0.5") == (-1.0, -0.5)
    assert PixelRange().convert("1", None, None) == 1 and PixelRange().convert("0..1", None, None) == 1
    assert PixelRange(as_text=True).convert("0,255", None, None) == "0-255"  # what calibrate --range takes
    with pytest.raises(click.BadParameter):
        PixelRange().convert("0-2", None, None)


def test_profile_takes_the_calibrate_spelling(tiny_model: Path) -> None:
    result = CliRunner().invoke(cli, ["profile", str(tiny_model), *FAST, "--input-range", "0-255",
                                      "--random-inputs", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["config"]["input_range"] == [0.0, 255.0]
    assert doc["accuracy_basis"] == "accuracy vs m.onnx on ort-cpu on uniform random inputs in 0..255 (seed 0)"


def test_profile_takes_range_as_an_alias(tiny_model: Path) -> None:
    result = CliRunner().invoke(cli, ["profile", str(tiny_model), *FAST, "--range", "0,255",
                                      "--random-inputs", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["input_range"] == [0.0, 255.0]


@pytest.mark.parametrize("command", [["calibrate"], ["analyze"], ["eval", "sr"], ["export"], ["profile"]])
def test_both_range_option_names_are_listed(command: list[str]) -> None:
    """One option, two names: `--range` (calibrate's) and `--input-range` (profile's) work on every command."""
    text = CliRunner().invoke(cli, [*command, "--help"]).output
    assert "--range" in text and "--input-range" in text, text


def test_cut_lists_say_how_many_were_left_out_once_per_reason() -> None:
    skipped = {"head": "K=3 is not a multiple of the block"} | {f"node{i}": "too small" for i in range(10)}
    assert _skipped_lines(skipped) == [
        "  10 left float: too small: node0, node1, node2 (+7 more; all of them: --json)",
        "  1 left float: K=3 is not a multiple of the block: head"]
    assert _skipped_lines({"a": "too small", "b": "too small"}) == ["  2 left float: too small: a, b"]


def test_calibrate_range_table_keeps_module_paths_whole_at_80_columns() -> None:
    name = "/layers.0/blocks.1/attn/qkv/MatMul_output_0"
    labels = {name: "layers.0.blocks.1.attn.qkv (MatMul)", "val_45": "layers.0.blocks.1.attn.proj"}
    ranges = [TensorRange(name, -12.345, 140.5, -10.25, 130.125, 0.00123, "mse", 8),
              TensorRange("val_45", -0.0001234, 3.4e5, -0.0001234, 3.4e5, 0.5, "mse", 8)]
    con = Console(file=io.StringIO(), width=80)
    con.print(_range_table(ranges, labels, "calibrated 2 activation tensors (mse, ort-cpu-int8)"))
    lines = con.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any("layers.0.blocks.1.attn.qkv (MatMul)" in line for line in lines), lines
    assert any("layers.0.blocks.1.attn.proj" in line for line in lines) and any("val_45" in line for line in lines)
    assert any("-0.0001234" in line and "50.000" in line for line in lines)  # every bound and the clipping shown


def test_build_names_the_extra_when_tensorrt_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from qdeploy.trt import loader

    def missing(flavor: str) -> None:
        raise BackendUnavailableError(f"{flavor} is not installed (No module named x)", "pip install x")

    monkeypatch.setattr(loader, "import_trt", missing)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    result = CliRunner().invoke(cli, ["build", str(model), "-o", str(tmp_path / "m.plan")])
    assert result.exit_code == 3
    assert 'pip install -e ".[tensorrt-rtx]"' in result.stderr


def test_missing_dataset_says_where_the_benchmarks_come_from(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["eval", "sr", "--dataset", str(tmp_path / "Set5"), "--scale", "3"])
    assert result.exit_code == 2
    assert "benchmark.tar" in DATASET_HINT and "benchmark.tar" in result.stderr
    assert "../shared" not in result.stderr


def _prof_row(p50: float, ratio: float) -> SimpleNamespace:
    return SimpleNamespace(latency_ms=SimpleNamespace(p50=p50), ratio_vs_first=ratio, size_bytes=2048,
                           worst_accuracy=lambda: {"sqnr_db": 40.0})


def test_demo_ratio_is_the_ratio_of_its_p50_columns() -> None:
    prof = SimpleNamespace(models=[_prof_row(50.0, 1.0), _prof_row(47.0, 0.90)])  # median ratio 0.90
    score = SimpleNamespace(psnr_y=30.0, ssim_y=0.9)
    sr = SimpleNamespace(models=[score, score], bicubic=SimpleNamespace(psnr_y=28.0, ssim_y=0.8))
    rows = demo_rows(prof, sr, "auto")
    assert rows[1]["p50_ratio"] == pytest.approx(47.0 / 50.0)
    assert rows[1]["latency_p50_ms"] / rows[0]["latency_p50_ms"] == pytest.approx(rows[1]["p50_ratio"])
    assert "latency_ratio" not in rows[1] and np.isfinite(rows[1]["profile_sqnr_db"])
