"""`qdeploy calibrate --method dobi --bits WxAy`: low-bit QDQ that runs in ORT, DOBI details in the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner, Result
from qdeploy_cli.main import cli

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.calib.cache import load_cache
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.io import load_model, save_model
from qdeploy.graph.select import constant_array

MIN_W4A4_SQNR_DB = 3.0  # sanity floor, far from noise (0 dB): measured 6.1 dB (minmax 4.8, W8A8 22.9)
TOKENS, DIM = 16, 8


def _floats(a: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in a.ravel())


@pytest.fixture
def attention_model(tmp_path: Path) -> Path:
    """One attention head: q, k, v projections, q @ k^T, softmax, attn @ v, output projection."""
    rng = np.random.default_rng(0)
    wq, wk, wv, wo = (rng.normal(0, 0.5, (DIM, DIM)) for _ in range(4))
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    attn (float[N, {TOKENS}, {DIM}] x) => (float[N, {TOKENS}, {DIM}] y)
    <float[{DIM}, {DIM}] wq = {{{_floats(wq)}}}, float[{DIM}, {DIM}] wk = {{{_floats(wk)}}},
     float[{DIM}, {DIM}] wv = {{{_floats(wv)}}}, float[{DIM}, {DIM}] wo = {{{_floats(wo)}}}>
    {{
        q = MatMul (x, wq)
        k = MatMul (x, wk)
        v = MatMul (x, wv)
        kt = Transpose <perm = [0, 2, 1]> (k)
        s = MatMul (q, kt)
        a = Softmax <axis = -1> (s)
        o = MatMul (a, v)
        y = MatMul (o, wo)
    }}
    """
    model = ir.serde.deserialize_model(onnx.parser.parse_model(text))
    return save_model(model, tmp_path / "in" / "attn.onnx")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(1).standard_normal((8, TOKENS, DIM)).astype(np.float32))
    return path


def _invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["calibrate", *map(str, args)])


def test_dobi_w4a4_runs_in_ort_and_records_details(attention_model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "attn.w4a4.onnx"
    result = _invoke(attention_model, "--data", data, "--method", "dobi", "--bits", "W4A4", "--threads", "1",
                     "--json", "-o", out)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method"] == "dobi"
    cache = load_cache(out.with_name("attn.w4a4.calib.json"))
    assert cache.method == "dobi" and cache.target.bits == 4
    assert cache.observer_config["num_candidates"] >= 100
    for r in cache.ranges.values():
        assert r.details["shape"] in ("bell", "one-sided") and r.details["num_candidates"] >= 100
        assert r.details["clipped_fraction"] == r.clipped_fraction
    assert cache.ranges["a"].details["shape"] == "one-sided"  # the softmax output
    assert cache.ranges["x"].details["shape"] == "bell"

    qmodel = load_model(out)
    weight_dqs = [n for n in qmodel.graph
                  if n.op_type == "DequantizeLinear" and constant_array(n.inputs[0]) is not None]
    assert len(weight_dqs) == 4
    for dq in weight_dqs:  # symmetric 4-bit codes around the zero point (int8 zp 0; uint8 zp 8 without VNNI)
        codes = constant_array(dq.inputs[0]).astype(np.int32) - constant_array(dq.inputs[2]).astype(np.int32)
        assert np.abs(codes).max() == 7
    assert sum(n.op_type == "Clip" for n in qmodel.graph) == len(cache.ranges)  # every activation on 4 bits

    x = np.random.default_rng(2).standard_normal((2, TOKENS, DIM)).astype(np.float32)
    backend = get_backend("ort-cpu")
    with backend.open(attention_model, SessionOptions(threads=1)) as s_float, \
            backend.open(out, SessionOptions(threads=1)) as s_q:
        ref, got = s_float.run({"x": x})["y"], s_q.run({"x": x})["y"]
    assert sqnr_db(ref, got) >= MIN_W4A4_SQNR_DB, sqnr_db(ref, got)


def test_default_bits_and_w8a8_are_the_same_model(attention_model: Path, data: Path, tmp_path: Path) -> None:
    outs = [tmp_path / name / "m.onnx" for name in ("default", "w8a8")]
    for out, extra in zip(outs, ([], ["--bits", "w8a8"]), strict=True):
        result = _invoke(attention_model, "--data", data, "--method", "dobi", *extra, "-o", out)
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_help_lists_dobi_and_bits() -> None:
    result = CliRunner().invoke(cli, ["calibrate", "--help"])
    assert result.exit_code == 0 and "dobi" in result.output and "--bits" in result.output


@pytest.mark.parametrize("bits", ["W4", "4", "W9A9", "W1A1", "A4W4", "W4A4x"])
def test_bad_bits_is_one_error_naming_the_form(attention_model: Path, data: Path, tmp_path: Path,
                                               bits: str) -> None:
    out = tmp_path / "out" / "m.onnx"
    result = _invoke(attention_model, "--data", data, "--bits", bits, "-o", out)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "WxAy" in errors[0] and "2..8" in errors[0], result.stderr
    assert "hint: e.g. --bits W8A8" in result.stderr and not out.parent.exists()


MAX_STRIPPED_REL = 0.05
"""With all Q/DQ stripped (weights keep their 8-bit rounding), the shifted attention stays at the float
model up to weight rounding; a wrong per-key correction moves it by far more (the means here are O(1))."""


def test_shift_qk_flag_rewrites_attention_exactly(attention_model: Path, data: Path, tmp_path: Path) -> None:
    from qdeploy.graph.passes import STRIP_PIPELINE

    out = tmp_path / "out" / "attn.shift.onnx"
    result = _invoke(attention_model, "--data", data, "--method", "minmax", "--preset", "lowbit-sim",
                     "--bits", "W8A8", "--shift-qk", "--threads", "1", "-o", out)
    assert result.exit_code == 0, result.output
    cache = load_cache(out.with_name("attn.shift.calib.json"))
    assert "shift_qk" in cache.extra
    stripped = load_model(out)
    for pass_cls in STRIP_PIPELINE:
        pass_cls()(stripped)
    x = {"x": np.random.default_rng(2).standard_normal((2, TOKENS, DIM)).astype(np.float32)}
    backend = get_backend("ort-cpu")
    with backend.open(attention_model, SessionOptions(threads=1)) as s:
        ref = s.run(x)["y"]
    with backend.open(stripped, SessionOptions(threads=1, graph_optimization="disable")) as s:
        got = s.run(x)["y"]
    # stripping keeps the 8-bit weight rounding, so "exact" here means within 8-bit weight error
    assert np.abs(got - ref).max() <= MAX_STRIPPED_REL * np.abs(ref).max()
    assert sum(n.op_type == "ReduceSum" for n in load_model(out).graph) >= 1  # the per-key correction


def test_refine_dqc_flag_lowers_its_loss_and_reports_it(attention_model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "attn.dqc.onnx"
    result = _invoke(attention_model, "--data", data, "--method", "minmax", "--preset", "lowbit-sim",
                     "--bits", "W4A4", "--refine", "dqc", "--dqc-iterations", "20", "--dqc-batch", "4",
                     "--dqc-device", "cpu", "--threads", "1", "--json", "-o", out)
    assert result.exit_code == 0, result.output
    refine = json.loads(result.stdout)["refine"]
    assert refine["applied"] and refine["final_loss"] < refine["initial_loss"]
    with get_backend("ort-cpu").open(out, SessionOptions(threads=1)) as s:
        y = s.run({"x": np.ones((1, TOKENS, DIM), np.float32)})["y"]
    assert np.isfinite(y).all()


def test_a_low_bit_simulation_is_not_called_int8(attention_model: Path, data: Path, tmp_path: Path) -> None:
    """The placement line of a W4A4 simulation says it is one, not that layers 'will run INT8'."""
    result = CliRunner().invoke(cli, ["calibrate", str(attention_model), "--data", str(data), "--method", "minmax",
                                      "--preset", "lowbit-sim", "--bits", "W4A4", "--threads", "1", "-o",
                                      str(tmp_path / "a.onnx")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("QDQ placement:"))
    assert "will run INT8" not in line and "W4A4-grid values (a simulation" in line
    for target in ("ort-cpu", "tensorrt"):  # `qdeploy check` says the same of the written graph
        checked = CliRunner().invoke(cli, ["check", str(tmp_path / "a.onnx"), "--target", target, "--json"])
        assert checked.exit_code == 0, checked.output
        doc = json.loads(checked.stdout)
        assert doc["grid"] == "W4A4" and "will run INT8" not in doc["line"] and "W4A4-grid" in doc["line"]
    result = CliRunner().invoke(cli, ["calibrate", str(attention_model), "--data", str(data), "--method", "minmax",
                                      "--threads", "1", "-o", str(tmp_path / "b.onnx")])
    assert result.exit_code == 0, result.output
    checked = json.loads(CliRunner().invoke(cli, ["check", str(tmp_path / "b.onnx"), "--json"]).stdout)
    assert checked["grid"] is None and "will run INT8" in checked["line"]


def test_refine_on_an_op_torch_cannot_run_fails_before_calibrating(data: Path, tmp_path: Path) -> None:
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, {TOKENS}, {DIM}] x) => (float[N, {TOKENS}, {DIM}] y)
    <float[{DIM}, {DIM}] w = {{{_floats(np.eye(DIM))}}}>
    {{
        h = MatMul (x, w)
        y = Hardmax <axis = -1> (h)
    }}
    """
    model = save_model(ir.serde.deserialize_model(onnx.parser.parse_model(text)), tmp_path / "hm.onnx")
    out = tmp_path / "out" / "hm.qdq.onnx"
    result = _invoke(model, "--data", data, "--method", "minmax", "--preset", "lowbit-sim", "--bits", "W4A4",
                     "--refine", "dqc", "-o", out)
    assert result.exit_code != 0
    assert "--refine cannot run this model" in result.output and "Hardmax" in result.output
    assert not out.exists() and not out.with_name("hm.qdq.calib.json").exists()
