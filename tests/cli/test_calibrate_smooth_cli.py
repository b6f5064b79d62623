"""`qdeploy calibrate --smooth ALPHA [--rotate]`: channel smoothing and rotation of Linear inputs, end to end.

A Linear reading a stream with one far-off-centre channel and one wide channel (NGswin's residual stream in
miniature): smoothing must keep the float function (checked with the Q/DQ stripped), store its transform
in the cache so ``--cache`` rebuilds the same model, and buy W4A4 accuracy over plain quantization.
"""

from __future__ import annotations

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
from qdeploy.graph.passes.rotate_inputs import is_rotation

TOKENS, DIM, OUT = 32, 16, 12
MIN_SMOOTH_GAIN_DB = 6.0  # W4A4 output SQNR, --smooth 0.7 --rotate vs plain (minmax both)
MAX_STRIPPED_REL = 0.03  # Q/DQ stripped: float up to the 8-bit weight rounding that stripping keeps


def _floats(a: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in a.ravel())


def _stream(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, TOKENS, DIM)).astype(np.float32)
    x[..., 2] = 40.0 + x[..., 2]  # a channel far from zero (a "massive activation")
    x[..., 5] *= 15.0  # a wide channel
    return x


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 0.5, (DIM, OUT)), rng.normal(0, 0.1, OUT)
    w[2] *= 0.05  # the off-centre channel is read through a small row (as in trained nets)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    lin (float[N, {TOKENS}, {DIM}] x) => (float[N, {TOKENS}, {OUT}] y)
    <float[{DIM}, {OUT}] w = {{{_floats(w)}}}, float[{OUT}] b = {{{_floats(b)}}}, int64[2] flat = {{-1, {DIM}}},
     int64[3] back = {{-1, {TOKENS}, {OUT}}}>
    {{
        x2 = Reshape (x, flat)
        y2 = Gemm (x2, w, b)
        y = Reshape (y2, back)
    }}
    """
    return save_model(ir.serde.deserialize_model(onnx.parser.parse_model(text)), tmp_path / "in" / "lin.onnx")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "calib.npz"
    np.savez(path, x=_stream(8, 1))
    return path


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, ["calibrate", *map(str, args)], catch_exceptions=False)


def _y(model: Path | ir.Model, x: np.ndarray, level: str = "all") -> np.ndarray:
    with get_backend("ort-cpu").open(model, SessionOptions(threads=1, graph_optimization=level)) as s:
        return s.run({"x": x})["y"]


def _w4a4(model: Path, data: Path, out: Path, *flags: str, bits: str = "W4A4") -> float:
    result = _invoke(model, "--data", data, "--method", "minmax", "--preset", "lowbit-sim", "--bits", bits,
                     "--threads", "1", *flags, "-o", out)
    assert result.exit_code == 0, result.output
    x = _stream(2, 9)
    return sqnr_db(_y(model, x), _y(out, x, "basic"))


def test_smooth_and_rotate_buy_w4a4_accuracy(model: Path, data: Path, tmp_path: Path) -> None:
    plain = _w4a4(model, data, tmp_path / "plain.onnx")
    smooth = _w4a4(model, data, tmp_path / "smooth.onnx", "--smooth", "0.7", "--rotate")
    assert smooth > plain + MIN_SMOOTH_GAIN_DB, (plain, smooth)
    assert any(is_rotation(n) for n in load_model(tmp_path / "smooth.onnx").graph)


def test_smoothing_keeps_the_float_function_and_its_cache_rebuilds_it(model: Path, data: Path,
                                                                      tmp_path: Path) -> None:
    from qdeploy.graph.passes import STRIP_PIPELINE

    out = tmp_path / "s.onnx"
    _w4a4(model, data, out, "--smooth", "0.5", bits="W8A8")
    cache = load_cache(out.with_name("s.calib.json"))
    assert set(cache.extra["smooth"]) and all(len(v["shift"]) == DIM for v in cache.extra["smooth"].values())
    again = tmp_path / "again.onnx"
    result = _invoke(model, "--cache", out.with_name("s.calib.json"), "--preset", "lowbit-sim", "--bits", "W8A8",
                     "--smooth", "0.5", "-o", again)
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == out.read_bytes()
    stripped = load_model(out)
    for pass_cls in STRIP_PIPELINE:
        pass_cls()(stripped)
    x = _stream(2, 5)
    ref = _y(model, x)
    assert np.abs(_y(stripped, x, "disable") - ref).max() <= MAX_STRIPPED_REL * np.abs(ref).max()


def test_a_cache_without_smoothing_is_refused_with_the_fix(model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    _w4a4(model, data, out)
    result = _invoke(model, "--cache", out.with_name("p.calib.json"), "--preset", "lowbit-sim", "--bits", "W4A4",
                     "--smooth", "0.5", "-o", tmp_path / "x.onnx")
    assert result.exit_code != 0
    assert "holds no channel smoothing" in result.output and not (tmp_path / "x.onnx").exists()
