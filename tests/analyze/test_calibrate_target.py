"""`qdeploy calibrate --target-sqnr / --target-loss`: calibrate low, repair to the target, re-apply the map.

Real ORT sessions throughout; the target is checked by measuring the written model independently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from analyze_models import feeds, run
from click.testing import CliRunner
from qdeploy_cli.main import cli

from qdeploy.analyze import output_sqnr
from qdeploy.calib.cache import load_cache, save_cache
from qdeploy.graph.io import load_model, save_model
from qdeploy.graph.qdq_inventory import quantized_tensors

SQNR_SLACK_DB = 1e-6  # the plan's SQNR and ours come from the same ORT math on the same inputs


def _sqnr(model_path: Path, float_path: Path, data: list[dict[str, np.ndarray]]) -> float:
    fm, qm = load_model(float_path), load_model(model_path)
    return output_sqnr([run(fm, f, "all") for f in data], [run(qm, f) for f in data])


def _calibrate(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["calibrate", *args, "--method", "minmax", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def files(tmp_path: Path, float_model) -> dict[str, Path]:
    paths = {"float": save_model(float_model, tmp_path / "net.onnx"), "calib": tmp_path / "calib.npz",
             "held": tmp_path / "held.npz"}
    np.savez(paths["calib"], x=np.concatenate([f["x"] for f in feeds(6, seed=0)]))
    np.savez(paths["held"], x=np.concatenate([f["x"] for f in feeds(4, seed=7)]))
    return paths


def test_target_sqnr_is_met_saved_and_reapplied(tmp_path: Path, files: dict[str, Path]) -> None:
    held = feeds(4, seed=7)
    common = [str(files["float"]), "--data", str(files["calib"])]
    for bits in ("W4A4", "W8A8"):
        _calibrate(*common, "--bits", bits, "-o", str(tmp_path / f"{bits}.onnx"))
    low, high = (_sqnr(tmp_path / f"{b}.onnx", files["float"], held) for b in ("W4A4", "W8A8"))
    assert high > low + 10, (low, high)  # the test needs room between the two
    target = (low + high) / 2
    out = tmp_path / "mixed.onnx"
    doc = _calibrate(*common, "--bits", "W4A4", "--target-sqnr", f"{target:.3f}", "--target-data",
                     str(files["held"]), "--target-samples", "4", "-o", str(out))
    plan = doc["plan"]
    assert plan["met"] and plan["sqnr_db"] >= target
    assert _sqnr(out, files["float"], held) >= target - SQNR_SLACK_DB
    labels = {t.name: t.label for t in quantized_tensors(load_model(out).graph)}
    assert labels == plan["precision_map"] and "int4" in labels.values()
    assert any(v in ("int8", "float") for v in labels.values())
    cache = load_cache(out.with_name("mixed.calib.json"))
    assert cache.precision_map == plan["precision_map"]
    assert set(cache.extra["raise_ranges"]) == set(cache.ranges) and cache.extra["target"]["met"]
    again = tmp_path / "again.onnx"
    _calibrate(str(files["float"]), "--bits", "W4A4", "--cache", str(out.with_name("mixed.calib.json")), "-o",
               str(again))
    for f in held:
        np.testing.assert_allclose(run(load_model(again), f)["y"], run(load_model(out), f)["y"], atol=1e-6)


def test_target_line_says_what_it_was_measured_on(tmp_path: Path, files: dict[str, Path]) -> None:
    """The console verdict names its basis (which held-out inputs, how many), as the JSON and cache do;
    `--input-range` is accepted as calibrate's `--range` (one option, both names)."""
    args = ["calibrate", str(files["float"]), "--data", str(files["calib"]), "--method", "minmax", "--bits", "W4A4",
            "--target-sqnr", "20", "--target-data", str(files["held"]), "--target-samples", "4",
            "--input-range", "0,1", "-o", str(tmp_path / "m.onnx")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("target "))
    assert "measured as output SQNR on" in line and "held.npz" in " ".join(result.output.split()), result.output
    doc = json.loads(CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "j.onnx"), "--json"]).stdout)
    assert doc["plan"]["measured_on"] and "held.npz" in doc["plan"]["measured_on"]


def test_hand_edited_map_all_int8_matches_uniform_w8a8(tmp_path: Path, files: dict[str, Path]) -> None:
    """Raising every tensor by hand must give the model an 8-bit calibration gives (same observer)."""
    common = [str(files["float"]), "--data", str(files["calib"])]
    _calibrate(*common, "--bits", "W8A8", "-o", str(tmp_path / "w8.onnx"))
    out = tmp_path / "w4.onnx"
    _calibrate(*common, "--bits", "W4A4", "--target-sqnr", "0", "--target-data", str(files["held"]),
               "-o", str(out))
    path = out.with_name("w4.calib.json")
    cache = load_cache(path)
    assert set(cache.precision_map.values()) == {"int4"}  # 0 dB is met at the lowest bits
    save_cache(path, type(cache)(**{**cache.__dict__, "precision_map": dict.fromkeys(cache.precision_map, "int8")}))
    edited = tmp_path / "edited.onnx"
    _calibrate(str(files["float"]), "--bits", "W4A4", "--cache", str(path), "-o", str(edited))
    held = feeds(4, seed=7)
    w8, ed = load_model(tmp_path / "w8.onnx"), load_model(edited)
    sqnr = output_sqnr([run(w8, f) for f in held], [run(ed, f) for f in held])
    assert sqnr > 80, sqnr  # same grid, same bounds, same weights (measured: bit-identical)


@pytest.mark.parametrize("heldout", ["target-data", "holdout"])
def test_target_loss_on_sr_crops(tmp_path: Path, heldout: str) -> None:
    """ABPN x3 at W4A4 repaired to a 0.1 dB Y-PSNR budget on held-out procedural HR images: a separate
    folder (--target-data) or the --holdout part of the calibration folder."""
    from PIL import Image
    from qdeploy_calib_data.demo import render_procedural

    from qdeploy.calib.data import is_heldout
    from qdeploy.export import ExportConfig, export_model
    from qdeploy.sr.heldout import image_files, psnr_evaluator, sr_crops

    float_path = tmp_path / "abpn.onnx"
    export_model(ExportConfig(spec="abpn-x3", output=float_path, input_shapes=((1, 3, 32, 32),), dynamic_hw=True))
    calib_dir, hr_dir = tmp_path / "calib", tmp_path / "held"
    calib_dir.mkdir()
    hr_dir.mkdir()
    for i in range(3):
        Image.fromarray(render_procedural(300 + i, 192, 192)).save(hr_dir / f"h{i}.png")
    for i in range(4):
        Image.fromarray(render_procedural(400 + i, 96, 96)).save(calib_dir / f"c{i}.png")
    where = ["--target-data", str(hr_dir)]
    if heldout == "holdout":
        for i in range(3):  # the HR images join the calibration folder; the hash decides their side
            Image.fromarray(render_procedural(300 + i, 192, 192)).save(calib_dir / f"h{i}.png")
        where = ["--holdout", "0.5"]
    out = tmp_path / "mixed.onnx"
    doc = _calibrate(str(float_path), "--data", str(calib_dir), "--range", "0-255", "--bits", "W4A4",
                     "--target-loss", "0.1dB", *where, "--target-scale", "3", "--target-samples", "6",
                     "--target-crop", "24", "-o", str(out))
    plan = doc["plan"]
    assert plan["met"] and plan["float_score"] - plan["score"] <= 0.1
    # independent re-measurement of the written model on the same held-out crops
    files = image_files(hr_dir) if heldout == "target-data" else [
        p for p in sorted(calib_dir.iterdir()) if is_heldout(p.name, 0.5)]
    assert files
    lr, hr = sr_crops(files, 6, 24, 3, 255.0, seed=1)
    evaluate = psnr_evaluator(hr, 3, 255.0)
    fm, qm = load_model(float_path), load_model(out)
    f_out = [run(fm, {"input": lr[i:i + 1]}, "all") for i in range(len(lr))]
    q_out = [run(qm, {"input": lr[i:i + 1]}) for i in range(len(lr))]
    assert evaluate(f_out) - evaluate(q_out) <= 0.1 + 1e-9
    record = load_cache(out.with_name("mixed.calib.json")).extra["target"]
    assert record["loss_db"] <= 0.1 and ("holdout" in record["measured_on"]) == (heldout == "holdout")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target-loss", "0.05dB"], "--target-scale"),
        (["--target-loss", "0.05dB", "--target-scale", "3"], "held-out HR images"),
        (["--target-sqnr", "30", "--target-loss", "0.1"], "one accuracy target"),
        (["--target-scale", "2"], "only matter with a target"),
        (["--target-sqnr", "thirty"], "not a number"),
        (["--report", "rep"], "--report"),
    ],
)
def test_target_option_errors(tmp_path: Path, files: dict[str, Path], extra: list[str], message: str) -> None:
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(cli, ["calibrate", str(files["float"]), "--data", str(files["calib"]), *extra,
                                      "-o", str(out)])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not out.exists()


def test_holdout_split_is_disjoint_stable_and_used_by_the_target(tmp_path: Path) -> None:
    """--holdout: calibration and target samples never overlap; the split does not move when files are added."""
    from PIL import Image
    from qdeploy_calib_data.demo import render_procedural

    from qdeploy.calib.data import DataConfig, is_heldout, iter_samples
    from qdeploy.types import TensorSpec

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(render_procedural(500 + i, 40, 40)).save(folder / f"img{i:02d}.png")
    spec = [TensorSpec("x", ("N", 3, "H", "W"), "float32")]
    calib = [s["x"] for s in iter_samples(DataConfig(source=folder, holdout=0.3), spec)]
    held = [s["x"] for s in iter_samples(DataConfig(source=folder, holdout=0.3, part="heldout"), spec)]
    assert len(calib) + len(held) == 12 and held and calib
    assert not any(np.array_equal(a, b) for a in calib for b in held)
    before = {p.name for p in folder.iterdir() if is_heldout(p.name, 0.3)}
    Image.fromarray(render_procedural(999, 40, 40)).save(folder / "zz_new.png")
    assert before <= {p.name for p in folder.iterdir() if is_heldout(p.name, 0.3)}


def test_sr_target_catches_a_wrong_pixel_range(tmp_path: Path) -> None:
    """ABPN takes 0..255; calibrating with --range 0-1 must stop with a hint, not optimise garbage."""
    from PIL import Image
    from qdeploy_calib_data.demo import render_procedural

    from qdeploy.export import ExportConfig, export_model

    float_path = tmp_path / "abpn.onnx"
    export_model(ExportConfig(spec="abpn-x3", output=float_path, input_shapes=((1, 3, 32, 32),), dynamic_hw=True))
    calib_dir = tmp_path / "calib"
    calib_dir.mkdir()
    for i in range(6):
        Image.fromarray(render_procedural(600 + i, 96, 96)).save(calib_dir / f"c{i}.png")
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(cli, ["calibrate", str(float_path), "--data", str(calib_dir), "--bits", "W4A4",
                                      "--range", "0-1", "--target-loss", "0.1", "--holdout", "0.5",
                                      "--target-scale", "3", "--target-samples", "4", "--target-crop", "24",
                                      "-o", str(out)])
    assert result.exit_code != 0 and "wrong pixel range" in result.output and "--range 0-255" in result.output
    assert not out.exists()
