"""Progress off a terminal (plain periodic lines) and the calibrate data defaults, through click's CliRunner.

CliRunner's streams are not terminals, which is exactly the CI-log / nohup case: the rich bar draws
nothing there, so the plain lines must appear. One test forces rich's terminal mode to check that an
estimate line printed while the live bar is drawn gets a line of its own.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx.parser
import onnx_ir as ir
import pytest
from click.testing import CliRunner, Result
from PIL import Image
from qdeploy_cli._progress import PLAIN_INTERVAL_S, PlainProgress, install_announcements, progress_reporter
from qdeploy_cli.main import cli

from qdeploy.calib.images import DEFAULT_CROP
from qdeploy.graph.io import save_model
from qdeploy.progress import ANNOUNCE_LOGGER, announce

PLAIN_LINE = re.compile(r"^calibrating: (\d+)/(\d+) samples, \d+ s elapsed(, ~\d+ s left)?$", re.MULTILINE)


class Clock:
    """A fake monotonic clock advanced by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_tenth_with_an_estimate() -> None:
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress("calibrating", "samples", stream, clock)
    for done in range(1, 101):
        clock.now += 0.1
        report(done, 100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # one per 10 %, none in between (0.1 s per sample: the interval never fires)
    assert lines[4] == "calibrating: 50/100 samples, 5 s elapsed, ~5 s left"
    assert lines[-1] == "calibrating: 100/100 samples, 10 s elapsed"  # no estimate once done


def test_plain_lines_every_interval_when_steps_are_slow_or_total_unknown() -> None:
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress("calibrating", "samples", stream, clock)
    for done in range(1, 9):
        clock.now += PLAIN_INTERVAL_S / 4
        report(done, None)
    assert stream.getvalue().splitlines() == ["calibrating: 4 samples, 10 s elapsed",
                                              "calibrating: 8 samples, 20 s elapsed"]


def test_a_new_total_starts_a_new_stage() -> None:
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress("calibrating", "samples", stream, clock)
    report(10, 10)
    report(1, 4)  # e.g. a verification stage after calibration
    assert stream.getvalue().splitlines()[-1].startswith("calibrating: 1/4 samples")


def _model(path: Path) -> Path:
    """Conv(3->4) -> Relu, dynamic batch and H/W, weights scaled for inputs in [0, 1]."""
    w = ", ".join(repr(float(v)) for v in np.random.default_rng(0).normal(0, 0.3, 4 * 3 * 3 * 3))
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, H, W] x) => (float[N, 4, H, W] y) <float[4, 3, 3, 3] w = {{{w}}}> {{
            c = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (x, w)
            y = Relu (c)
        }}""")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_model(ir.serde.deserialize_model(proto), path)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "images" / "set"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, hw in enumerate([(40, 48), (120, 100), (30, 30)]):
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return _model(tmp_path / "in" / "model.onnx"), tmp_path / "images"


def _calibrate(model: Path, data: Path, out: Path, *extra: str) -> Result:
    return CliRunner().invoke(cli, ["calibrate", str(model), "--data", str(data), "--method", "mse",
                                    "--threads", "1", "--no-verify", "-o", str(out), *extra])


def test_calibrate_off_a_terminal_prints_plain_progress_and_the_defaults(setup: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    model, data = setup
    result = _calibrate(model, data, tmp_path / "out" / "m.qdq.onnx")
    assert result.exit_code == 0, result.output
    lines = PLAIN_LINE.findall(result.stderr)
    assert lines, result.stderr
    assert lines[-1][0] == lines[-1][1]  # the last line says it is complete
    assert (f"calibrating on 3 random {DEFAULT_CROP}x{DEFAULT_CROP} crops of all 3 images "
            "(defaults; --num-samples/--crop to change); 2 images smaller than 96 px: cropped to their smaller side"
            in result.stderr), result.stderr
    assert "calibrating" not in result.stdout  # stdout keeps the summary only


def test_calibrate_crop_none_reads_whole_images_and_json_stays_quiet(setup: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    model, data = setup
    result = _calibrate(model, data, tmp_path / "out" / "m.qdq.onnx", "--crop", "none", "--num-samples", "2")
    assert result.exit_code == 0, result.output
    assert "calibrating on 2 of the 3 images, whole" in result.stderr
    quiet = _calibrate(model, data, tmp_path / "out" / "q.qdq.onnx", "--json")
    assert quiet.exit_code == 0, quiet.output
    assert not PLAIN_LINE.search(quiet.stderr) and "calibrating on" not in quiet.stderr


@pytest.mark.parametrize("bad", ["0", "-3", "big"])
def test_calibrate_rejects_bad_crop_values(setup: tuple[Path, Path], tmp_path: Path, bad: str) -> None:
    model, data = setup
    result = _calibrate(model, data, tmp_path / "out" / "m.qdq.onnx", "--crop", bad)
    assert result.exit_code == 2 and "--crop" in result.output


def test_a_second_stage_has_its_own_label_unit_and_clock() -> None:
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress("calibrating", "samples", stream, clock)
    report(4, 4)
    clock.now += 30.0
    report.relabel("DQC", "iterations")
    clock.now += 1.0
    report(1, 10)
    assert stream.getvalue().splitlines()[-1] == "DQC: 1/10 iterations, 1 s elapsed, ~9 s left"


DQC_ESTIMATE = re.compile(r"^DQC: 6 iterations, ~(under )?[\d.]+ (ms|s|min|h) each -> about (under )?[\d.]+ "
                          r"(ms|s|min|h) \(first (iteration|\d iterations) measured\)$", re.MULTILINE)
DQC_LINE = re.compile(r"^DQC: (\d+)/6 iterations, \d+ s elapsed", re.MULTILINE)


def test_dqc_announces_its_estimate_before_it_goes_on_and_reports_progress_in_logs(
        setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = setup
    refine = ("--refine", "dqc", "--dqc-iterations", "6", "--dqc-batch", "2", "--dqc-device", "cpu")
    result = _calibrate(model, data, tmp_path / "out" / "m.qdq.onnx", *refine)
    assert result.exit_code == 0, result.output
    estimates = list(DQC_ESTIMATE.finditer(result.stderr))
    assert len(estimates) == 1, result.stderr
    steps = list(DQC_LINE.finditer(result.stderr))
    assert steps and steps[-1].group(1) == "6", result.stderr  # plain lines off a terminal, to the end
    assert estimates[0].start() < steps[-1].start()  # said while iterations were still to come
    quiet = _calibrate(model, data, tmp_path / "out" / "q.qdq.onnx", *refine, "--json")
    assert quiet.exit_code == 0, quiet.output
    assert not DQC_ESTIMATE.search(quiet.stderr) and not DQC_LINE.search(quiet.stderr)


def test_minutes_are_said_as_minutes_not_raw_seconds() -> None:
    stream, clock = io.StringIO(), Clock()
    report = PlainProgress("DQC", "iterations", stream, clock)
    clock.now += 412.7
    report(50, 100)
    assert stream.getvalue().splitlines() == ["DQC: 50/100 iterations, 6 min 53 s elapsed, ~6 min 53 s left"]


@pytest.fixture
def announcements() -> Iterator[None]:
    """The CLI's announcement printer, installed as a command would, and the logger restored afterwards."""
    logger = logging.getLogger(ANNOUNCE_LOGGER)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    install_announcements()
    yield
    logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_an_estimate_said_under_a_live_bar_gets_a_line_of_its_own(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   announcements: None) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes stderr for a terminal and draws its live bar
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    estimate = "DQC: 200 iterations, ~1.8 s each -> about 6 min (first iteration measured)"
    with progress_reporter("calibrating") as report:
        report(1, 4)
        announce(estimate)
        report(2, 4)
    err = capsys.readouterr().err
    assert "━" in err  # the bar was drawn, so the check below is about a line beside a live bar
    shown = [_ESCAPE.sub("", part) for line in err.split("\n") for part in line.split("\r")]
    assert estimate in shown, shown  # alone on its line, not glued after the bar's "1/4 0:00:00"


def _npz(path: Path, n: int) -> Path:
    np.savez(path, x=np.random.default_rng(2).random((n, 3, 8, 8), dtype=np.float32))
    return path


def test_num_samples_beyond_the_data_says_how_many_are_used(setup: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = setup
    result = _calibrate(model, images, tmp_path / "out" / "m.qdq.onnx", "--num-samples", "32")
    assert result.exit_code == 0, result.output
    assert "--num-samples 32: the data gives 3 samples; using 3" in result.stderr.splitlines()
    arrays = _calibrate(model, _npz(tmp_path / "d.npz", 6), tmp_path / "out" / "a.qdq.onnx", "--num-samples", "32")
    assert arrays.exit_code == 0, arrays.output
    assert "--num-samples 32: the data gives 6 samples; using 6" in arrays.stderr.splitlines()
    enough = _calibrate(model, images, tmp_path / "out" / "e.qdq.onnx", "--num-samples", "2")
    assert enough.exit_code == 0 and "--num-samples" not in enough.stderr, enough.output


def test_a_target_search_shows_its_sweep_as_one_and_the_placement_once(setup: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    model, data = setup
    result = _calibrate(model, data, tmp_path / "out" / "m.qdq.onnx", "--bits", "W4A4", "--target-sqnr", "20",
                        "--target-samples", "2")
    assert result.exit_code == 0, result.output
    sweep = re.findall(r"^sensitivity sweep: (\d+)/(\d+) runs, ", result.stderr, re.MULTILINE)
    assert sweep and sweep[-1][0] == sweep[-1][1], result.stderr  # its own label and unit, to the end
    assert not any(total == sweep[-1][1] for _, total, _ in PLAIN_LINE.findall(result.stderr))  # not "calibrating"
    assert result.stdout.count("quantized layers") == 1, result.stdout  # the plan's model is the one written
