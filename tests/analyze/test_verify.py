"""``--method auto`` checks itself on held-out data and repairs a planted bad tensor, naming it.

Real exports, real ONNX Runtime sessions (the check runs ORT_ENABLE_ALL kernels); every figure compared
here is measured against the float model, never against numbers stored in the test.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from qdeploy.analyze.verify import QualityBar
from qdeploy.calib.data import DataConfig
from qdeploy.pipeline import CalibrateConfig, calibrate_model

BAR = QualityBar()
SQNR_SLACK_DB = 1.0  # the check's held-out samples vs a re-measurement on the same held-out file


def _export(module, shape: tuple[int, ...], path: Path) -> Path:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.onnx.export(module.eval(), (torch.zeros(shape),), buf, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    onnx.save(onnx.load_from_string(buf.getvalue()), path)
    return path


def _planted():
    """A conv net with one planted hazard: a conv output cubed before the next conv (a heavy-tailed tensor
    that no 8-bit range holds: min/max, mse, percentile and entropy all leave the output near 20 dB)."""
    import torch

    class Planted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.c1, self.c2 = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 1)
            self.c3, self.c4 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1)
            for m in (self.c1, self.c2, self.c3, self.c4):
                torch.nn.init.normal_(m.weight, 0, 0.3, generator=g)
                torch.nn.init.zeros_(m.bias)

        def forward(self, x):
            a = self.c1(x)
            return self.c2(a * a * a) + self.c4(self.c3(x))

    return Planted()


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - out).astype(np.float64) ** 2)))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("planted")
    model = _export(_planted(), (1, 4, 16, 16), tmp / "planted.onnx")
    data = tmp / "data.npy"
    np.save(data, np.random.default_rng(0).normal(0, 0.5, (48, 4, 16, 16)).astype(np.float32))
    return model, data


def _calibrate(model: Path, data: Path, out: Path, method: str, fast_weights: bool = True) -> object:
    cfg = DataConfig(source=data, holdout=0.25)
    return calibrate_model(CalibrateConfig(model=model, output=out, data=cfg, method=method, threads=1,
                                           fast_weights=fast_weights))


def test_planted_tensor_is_repaired_and_named(planted: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = planted
    mse = _calibrate(model, data, tmp_path / "mse.onnx", "mse")
    auto = _calibrate(model, data, tmp_path / "auto.onnx", "auto")
    v = auto.verified
    assert v.before_sqnr_db < BAR.sqnr_db, "the planted hazard no longer breaks the mse start: test is void"
    assert v.met and v.after_sqnr_db >= BAR.sqnr_db
    producers = {c.producer for c in v.changes}  # "made by": module path and op, e.g. "top-level (Mul)"
    assert any("(Mul" in p for p in producers), f"the cubed tensor (a Mul output) is not among the repairs: {v.changes}"
    # independent re-measurement on the held-out samples of the data file
    x = np.load(data)
    held = np.array([i for i in range(len(x)) if _is_heldout(i)])
    ref = _run(model, x[held])
    assert _sqnr(ref, _run(auto.output, x[held])) >= BAR.sqnr_db - SQNR_SLACK_DB
    assert _sqnr(ref, _run(mse.output, x[held])) < BAR.sqnr_db
    # the repair is in the cache: reusing it rebuilds the very same model
    again = calibrate_model(CalibrateConfig(model=model, output=tmp_path / "again.onnx", cache=auto.cache))
    np.testing.assert_array_equal(_run(again.output, x[held]), _run(auto.output, x[held]))


def _is_heldout(i: int) -> bool:
    from qdeploy.calib.data import is_heldout

    return is_heldout(f"#{i}", 0.25)


def test_cli_summary_names_the_repaired_tensor(planted: tuple[Path, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner
    from qdeploy_cli.main import cli

    model, data = planted
    res = CliRunner().invoke(cli, ["calibrate", str(model), "--data", str(data), "--holdout", "0.25",
                                   "-o", str(tmp_path / "q.onnx")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "check (output SQNR >= 40 dB): met" in res.output
    assert "Mul_1_output_0" in res.output and "float needed to meet the bar" in res.output


@pytest.fixture(scope="module")
def good_net(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A conv net that meets the bar with mse's ranges (no repair needed)."""
    import analyze_models
    import onnx_ir as ir

    tmp = tmp_path_factory.mktemp("good")
    model = tmp / "net.onnx"
    ir.save(analyze_models.conv_net(), model)
    data = tmp / "data.npy"
    np.save(data, np.random.default_rng(3).random((24, 3, analyze_models.HW, analyze_models.HW), np.float32))
    return model, data


def test_a_model_that_meets_the_bar_is_the_mse_model(good_net: tuple[Path, Path], tmp_path: Path) -> None:
    """No repair needed: auto's ranges are mse's, so (exact weights) the QDQ model computes what mse's does."""
    model, data = good_net
    auto = _calibrate(model, data, tmp_path / "auto.onnx", "auto", fast_weights=False)
    mse = _calibrate(model, data, tmp_path / "mse.onnx", "mse")
    assert auto.verified.met and not auto.verified.changes and auto.verified.faster is None
    for x in np.load(data)[:6]:
        np.testing.assert_array_equal(_run(auto.output, x[None]), _run(mse.output, x[None]))


def test_the_faster_form_is_measured_kept_only_if_met_and_cached(good_net: tuple[Path, Path], tmp_path: Path) -> None:
    """On ORT CPU without VNNI, auto also measures the pair-safe int8 form; what it keeps, the cache rebuilds."""
    import onnx_ir as ir

    from qdeploy.quant.kernel_forms import pair_safe_int8_convs
    from qdeploy.quant.presets import cpu_has_vnni

    if cpu_has_vnni():
        pytest.skip("with VNNI the preset's weights are int8 already: no faster form to try")
    model, data = good_net
    auto = _calibrate(model, data, tmp_path / "auto.onnx", "auto")
    mse = _calibrate(model, data, tmp_path / "mse.onnx", "mse")
    faster = auto.verified.faster
    assert faster is not None and faster["convs"] > 0
    assert faster["kept"] == (faster["sqnr_db"] >= BAR.sqnr_db)
    expected = pair_safe_int8_convs(ir.load(mse.output))[0] if faster["kept"] else ir.load(mse.output)
    ir.save(expected, tmp_path / "expected.onnx")
    again = calibrate_model(CalibrateConfig(model=model, output=tmp_path / "again.onnx", cache=auto.cache))
    for x in np.load(data)[:6]:
        np.testing.assert_array_equal(_run(auto.output, x[None]), _run(tmp_path / "expected.onnx", x[None]))
        np.testing.assert_array_equal(_run(again.output, x[None]), _run(auto.output, x[None]))


def test_sr_models_are_detected_from_their_output_shape() -> None:
    import onnx_ir as ir
    import torch

    from qdeploy.analyze.target import detect_sr_scale

    class Up(torch.nn.Module):
        def __init__(self, s: int) -> None:
            super().__init__()
            self.conv, self.shuffle = torch.nn.Conv2d(3, 3 * s * s, 3, padding=1), torch.nn.PixelShuffle(s)

        def forward(self, x):
            return self.shuffle(self.conv(x))

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for s in (2, 3):
            path = _export(Up(s), (1, 3, 8, 8), Path(tmp) / f"up{s}.onnx")
            assert detect_sr_scale(ir.load(path), {"x": np.zeros((1, 3, 8, 8), np.float32)}) == s
        path = _export(torch.nn.Conv2d(3, 3, 3, padding=1), (1, 3, 8, 8), Path(tmp) / "same.onnx")
        assert detect_sr_scale(ir.load(path), {"x": np.zeros((1, 3, 8, 8), np.float32)}) is None


def test_a_repair_over_the_time_budget_is_skipped_and_said(planted: tuple[Path, Path], tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    model, data = planted
    cfg = DataConfig(source=data, holdout=0.25)
    with caplog.at_level("WARNING"):
        res = calibrate_model(CalibrateConfig(model=model, output=tmp_path / "q.onnx", data=cfg, threads=1,
                                              quality=QualityBar(max_repair_seconds=0.0)))
    v = res.verified
    assert not v.met and not v.changes and "repair_skipped" in v.timings
    assert "longer than 0 s" in caplog.text


def test_cli_says_whether_the_faster_form_was_kept(good_net: tuple[Path, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner
    from qdeploy_cli.main import cli

    from qdeploy.quant.presets import cpu_has_vnni

    model, data = good_net
    args = ["calibrate", str(model), "--data", str(data), "--holdout", "0.25", "--threads", "1"]
    res = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "q.onnx")], env={"COLUMNS": "200"})
    exact = CliRunner().invoke(cli, [*args, "--exact-weights", "-o", str(tmp_path / "e.onnx")], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and exact.exit_code == 0, res.output + exact.output
    assert "faster form" not in exact.output
    if not cpu_has_vnni():
        assert "faster form (int8 conv weights, pair-safe (u8s8 kernels)" in res.output
        assert ("kept, still meets the bar" in res.output) != ("not kept" in res.output)


def test_a_check_on_the_calibration_inputs_says_why(good_net: tuple[Path, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner
    from qdeploy_cli.main import cli

    model, data = good_net  # an array file: the default holds nothing out
    res = CliRunner().invoke(cli, ["calibrate", str(model), "--data", str(data), "--threads", "1", "-o",
                                   str(tmp_path / "q.onnx")], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "(not held out: the default holds out a fifth only of image folders with 10+ images" in res.output
