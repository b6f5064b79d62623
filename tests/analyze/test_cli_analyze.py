"""`qdeploy analyze`: --json, the report files and their plots (checked as images: no browser here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image
from qdeploy_cli.main import cli

from qdeploy.analyze.report import KIND_COLORS
from qdeploy.calib.cache import CalibrationCache, load_cache, save_cache
from qdeploy.graph.io import load_model, save_model
from qdeploy.graph.passes.precision_map import quantized_tensors
from qdeploy.types import QuantTarget


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def _runs(line: np.ndarray) -> int:
    return int(np.count_nonzero(line[1:] & ~line[:-1]) + line[0])


def count_bars(png: Path) -> int:
    """Bars of a :func:`qdeploy.analyze.report_plots._bar_figure` PNG: runs of the exact bar colours along
    the row just above the x axis (vertical bars) or the column just right of the y axis (horizontal bars,
    all starting at 0), whichever holds more (bars are drawn without antialiasing; the legend sits above
    the plot, top right)."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    hit = np.zeros(rgb.shape[:2], bool)
    for color in KIND_COLORS.values():
        hit |= np.all(rgb == _hex_rgb(color), axis=-1)
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    return max(_runs(hit[rows.max() - 1]), _runs(hit[:, cols.min() + 1]))


def _write_inputs(tmp_path: Path, float_model, w4a4, heldout) -> dict[str, Path]:
    low, ranges = w4a4
    paths = {
        "float": save_model(float_model, tmp_path / "model.onnx"),
        "qdq": save_model(low, tmp_path / "model.w4a4.qdq.onnx"),
        "data": tmp_path / "heldout.npz",
    }
    np.savez(paths["data"], x=np.concatenate([f["x"] for f in heldout]))
    cache = CalibrationCache("0" * 64, "minmax", {}, QuantTarget(4, False), "calib", 6, "1" * 64, ranges)
    paths["cache"] = save_cache(tmp_path / "model.w4a4.qdq.calib.json", cache)
    return paths


def test_cli_analyze_json_report_and_search(tmp_path: Path, float_model, w4a4, heldout) -> None:
    paths = _write_inputs(tmp_path, float_model, w4a4, heldout)
    report, mixed = tmp_path / "report", tmp_path / "mixed.qdq.onnx"
    args = [
        "analyze",
        str(paths["float"]),
        str(paths["qdq"]),
        "--data",
        str(paths["data"]),
        "--num-samples",
        "3",
        "--cache",
        str(paths["cache"]),
        "--target-sqnr",
        "20",
        "-o",
        str(mixed),
        "--report",
        str(report),
        "--json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    n = len(quantized_tensors(w4a4[0].graph))
    assert len(doc["analysis"]["tensors"]) == n and doc["analysis"]["samples"] == 3
    assert doc["plan"]["met"] and doc["plan"]["sqnr_db"] >= 20
    assert load_cache(paths["cache"]).precision_map == doc["plan"]["precision_map"]
    modules = load_cache(paths["cache"]).extra["modules"]  # keyed by ONNX name, like the map; for readers
    assert set(doc["plan"]["precision_map"]) <= set(modules) and modules["c1.weight"] == "c1.weight"
    assert {t.name: t.label for t in quantized_tensors(load_model(mixed).graph)} == doc["plan"][
        "precision_map"
    ]
    for name in (
        "report.md",
        "report.html",
        "analysis.json",
        "tensor_sqnr.png",
        "contribution.png",
        "search.png",
    ):
        assert (report / name).stat().st_size > 0, name
    assert count_bars(report / "tensor_sqnr.png") == n
    assert count_bars(report / "contribution.png") == n
    hists = sorted(report.glob("hist_*.png"))
    assert len(hists) == 4
    for png in [*hists, report / "search.png"]:
        with Image.open(png) as image:
            assert image.width > 300 and image.height > 200
            assert len(np.unique(np.asarray(image.convert("L")))) > 5  # drawn, not blank
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 + len(hists) and "http" not in page.replace(
        "http-equiv", ""
    )
    assert "Precision map" in page and doc["analysis"]["tensors"][0]["name"] in page
    assert "| rank |" in (report / "report.md").read_text()


def test_cli_analyze_table_and_errors(tmp_path: Path, float_model, w4a4, heldout) -> None:
    paths = _write_inputs(tmp_path, float_model, w4a4, heldout)
    base = ["analyze", str(paths["float"]), str(paths["qdq"]), "--data", str(paths["data"])]
    result = CliRunner().invoke(cli, [*base, "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "Most harmful quantized tensors (top 3)" in result.output and "output SQNR" in result.output
    bad = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "x.onnx")])
    assert bad.exit_code != 0 and "--target-sqnr" in bad.output


SWEEP_ESTIMATE = re.compile(r"^sensitivity sweep of (\d+) quantized tensors: (\d+) configurations x 3 samples, "
                            r"~(under )?[\d.]+ (ms|s|min|h) each -> about (under )?[\d.]+ (ms|s|min|h) "
                            r"\(second tensor measured\)$", re.MULTILINE)
SWEEP_LINE = re.compile(r"^sensitivity sweep: (\d+)/(\d+) runs, \d+ s elapsed", re.MULTILINE)


def test_cli_analyze_announces_the_sweep_estimate_and_names_its_source(tmp_path: Path, float_model, w4a4,
                                                                       heldout) -> None:
    paths = _write_inputs(tmp_path, float_model, w4a4, heldout)
    report = tmp_path / "report"
    args = ["analyze", str(paths["float"]), str(paths["qdq"]), "--data", str(paths["data"]), "--num-samples", "3",
            "--report", str(report)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    n = len(quantized_tensors(w4a4[0].graph))
    (estimate,) = SWEEP_ESTIMATE.findall(result.stderr)
    assert (int(estimate[0]), int(estimate[1])) == (n, 2 * n + 2), result.stderr
    runs = SWEEP_LINE.findall(result.stderr)
    assert runs and runs[-1] == (str(3 * (2 * n + 2)),) * 2, result.stderr  # plain lines in a log, to the end
    page = (report / "report.md").read_text()
    assert f"qdeploy analyze {paths['float']} {paths['qdq']} --data {paths['data']}" in page  # the command
    assert f"**data**: `{paths['data']} (3 samples)`" in page and "**local dB**:" in page
    assert json.loads((report / "analysis.json").read_text())["source"]["QDQ model"] == str(paths["qdq"])
