"""``calibrate_model`` end to end: float ONNX + .npz -> QDQ ONNX, cache and manifest (real ORT, no mocks).

Accuracy is judged on held-out inputs (other samples than the calibration ones) against the float model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from integration_models import CONV_COUNT, count_dq_fed, run_ort, sqnr_vs_float, write_conv_net

import qdeploy.calib.collect
from qdeploy.artifacts import file_sha256
from qdeploy.calib.data import DataConfig
from qdeploy.errors import InputError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.io import load_model
from qdeploy.pipeline import CalibrateConfig, CalibrateResult, calibrate_model
from qdeploy.quant import get_preset, tensors_to_calibrate

METHODS = ("minmax", "percentile", "entropy", "mse")
PRESETS = ("ort-cpu-int8", "tensorrt-int8")
MIN_SQNR_DB = 25.0
"""8-bit weights and activations on these small nets measure 31-38 dB; 25 dB catches a broken scale or a
misplaced Q/DQ (those fall to ~0-15 dB) with margin for the observers that clip (entropy, percentile)."""
QUANTIZED = {"conv": {"Conv": CONV_COUNT}, "mlp": {"Gemm": 2, "MatMul": 1}}
RANGE_KEYS = {"name", "observed_min", "observed_max", "lo", "hi", "clipped_fraction", "method", "count",
              "details"}


def _calibrate(model: Path, out: Path, data: Path | None, **kwargs: Any) -> CalibrateResult:
    data_config = DataConfig(data) if data else None
    config = CalibrateConfig(model=model, output=out, data=data_config, threads=1, **kwargs)
    return calibrate_model(config)


def _net(request: pytest.FixtureRequest, net: str) -> tuple[Path, Path, np.ndarray]:
    """(model, calibration .npz, held-out inputs) of the named fixture net."""
    return tuple(request.getfixturevalue(f"{net}_{part}") for part in ("model", "npz", "heldout"))  # type: ignore[return-value]


def _accuracy_level(preset: str) -> str:
    """ORT optimization level that shows what the preset's target runtime computes.

    ort-cpu-int8 is judged on ORT's real fused integer kernels ("all"). tensorrt-int8 is made for TensorRT,
    which computes the QDQ math exactly; ORT CPU's s8 x s8 kernels on an AVX2 machine without VNNI
    saturate int16 pair sums (the MLP falls to ~14 dB there), so it is judged on plain QDQ math ("disable").
    """
    return "all" if preset.startswith("ort-cpu") else "disable"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("net", ["conv", "mlp"])
def test_every_observer_and_preset_gives_an_accurate_valid_qdq_model(
    request: pytest.FixtureRequest, tmp_path: Path, net: str, method: str, preset: str
) -> None:
    model, npz, heldout = _net(request, net)
    result = _calibrate(model, tmp_path / "q.onnx", npz, method=method, preset=preset)

    onnx.checker.check_model(str(result.output), full_check=True)
    level = _accuracy_level(preset)
    ref, out = run_ort(model, heldout), run_ort(result.output, heldout, level)
    assert out.shape == ref.shape
    assert sqnr_db(ref, out) >= MIN_SQNR_DB, f"{net} {method} {preset}"
    assert result.summary["quantized_nodes"] == QUANTIZED[net]
    assert result.method == method and not result.reused_cache
    if preset == "ort-cpu-int8":  # every quantized op became an ORT integer kernel, none stayed float
        integer = result.kernels["integer_ops"]
        if net == "conv":
            assert integer.get("QLinearConv") == CONV_COUNT
        else:
            assert integer.get("QGemm", 0) + integer.get("QLinearMatMul", 0) == 3
        assert result.kernels["float_compute_ops"] == {}
    else:
        assert result.kernels == {}  # TensorRT's fusions are not ORT's: nothing to count here
    _check_cache(result, model, method, preset)
    _check_manifest(result, model, method)


def _check_cache(result: CalibrateResult, model: Path, method: str, preset: str) -> None:
    doc = json.loads(result.cache.read_text())
    assert result.cache == result.output.with_name("q.calib.json")
    assert doc["method"] == method and doc["model_sha256"] == file_sha256(model)
    assert doc["target"]["symmetric"] is (preset == "tensorrt-int8")
    needed = tensors_to_calibrate(load_model(model), get_preset(preset))
    assert sorted(doc["tensors"]) == sorted(needed)
    for name, r in doc["tensors"].items():
        assert set(r) == RANGE_KEYS and r["name"] == name and r["method"] == method
        assert r["observed_min"] <= r["observed_max"] and r["lo"] < r["hi"]
        assert 0.0 <= r["clipped_fraction"] <= (0.0 if method == "minmax" else 0.05)


def _check_manifest(result: CalibrateResult, model: Path, method: str) -> None:
    entry = json.loads((result.output.parent / "manifest.json").read_text())["artifacts"][result.output.name]
    assert entry["sha256"] == file_sha256(result.output)
    assert entry["source_sha256"] == file_sha256(model)
    assert entry["method"] == method and entry["calibration_cache"] == str(result.cache)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_ranges_and_model_do_not_depend_on_batch_size(conv_model: Path, conv_npz: Path, tmp_path: Path,
                                                        method: str) -> None:
    results = {bs: _calibrate(conv_model, tmp_path / f"b{bs}" / "q.onnx", conv_npz, method=method,
                              batch_size=bs)
               for bs in (1, 3, 8)}  # 12 samples: batch 8 leaves a ragged batch of 4
    caches = {bs: json.loads(r.cache.read_text())["tensors"] for bs, r in results.items()}
    for bs in (3, 8):
        for name, r in caches[1].items():
            assert (caches[bs][name]["lo"], caches[bs][name]["hi"]) == (r["lo"], r["hi"]), (bs, name)
        assert caches[bs] == caches[1]
        assert results[bs].output.read_bytes() == results[1].output.read_bytes()


def test_static_batch_model_calibrates_one_sample_at_a_time(conv_npz: Path, tmp_path: Path) -> None:
    static = write_conv_net(tmp_path / "static.onnx", dynamic_batch=False)
    one = _calibrate(static, tmp_path / "a" / "q.onnx", conv_npz, method="minmax", batch_size=1)
    eight = _calibrate(static, tmp_path / "b" / "q.onnx", conv_npz, method="minmax", batch_size=8)
    assert eight.output.read_bytes() == one.output.read_bytes()


def test_cache_reuse_skips_the_model_and_gives_the_same_bytes(
    conv_model: Path, conv_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _calibrate(conv_model, tmp_path / "first" / "q.onnx", conv_npz, method="mse")

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("collect_ranges ran although ranges came from --cache")

    monkeypatch.setattr(qdeploy.calib.collect, "collect_ranges", must_not_run)
    again = _calibrate(conv_model, tmp_path / "again" / "q.onnx", None, cache=first.cache)  # default method
    assert again.output.read_bytes() == first.output.read_bytes()
    assert again.reused_cache and again.cache == first.cache
    assert again.method == "mse"  # the cache's method, not the config's default ("entropy")
    entry = json.loads((again.output.parent / "manifest.json").read_text())["artifacts"]["q.onnx"]
    assert entry["method"] == "mse"
    assert not (tmp_path / "again" / "q.calib.json").exists()  # reusing a cache writes no new one
    with pytest.raises(AssertionError, match="collect_ranges ran"):  # the patch is live: proves the path
        _calibrate(conv_model, tmp_path / "fresh" / "q.onnx", conv_npz)


def test_cache_for_another_grid_or_model_is_refused(conv_model: Path, mlp_model: Path, conv_npz: Path,
                                                   tmp_path: Path) -> None:
    ort = _calibrate(conv_model, tmp_path / "ort" / "q.onnx", conv_npz, method="minmax")
    with pytest.raises(InputError, match="grid") as exc:
        _calibrate(conv_model, tmp_path / "trt" / "q.onnx", None, cache=ort.cache, preset="tensorrt-int8")
    assert "recalibrate" in exc.value.hint
    with pytest.raises(InputError, match="no range for"):
        _calibrate(mlp_model, tmp_path / "mlp" / "q.onnx", None, cache=ort.cache)
    assert not (tmp_path / "trt").exists() and not (tmp_path / "mlp").exists()


def test_two_runs_are_byte_identical(conv_model: Path, conv_npz: Path, tmp_path: Path) -> None:
    a = _calibrate(conv_model, tmp_path / "a" / "q.onnx", conv_npz, method="entropy", batch_size=4)
    b = _calibrate(conv_model, tmp_path / "b" / "q.onnx", conv_npz, method="entropy", batch_size=4)
    assert a.output.read_bytes() == b.output.read_bytes()
    assert a.cache.read_bytes() == b.cache.read_bytes()


@pytest.mark.parametrize(("options", "convs"), [
    ({}, CONV_COUNT),
    ({"exclude_nodes": ("head",)}, 2),
    ({"include_nodes": ("stem",)}, 1),
    ({"include_nodes": ("stem", "body"), "exclude_nodes": ("body",)}, 1),
    ({"op_types": ("Gemm",)}, None),
    ({"exclude_op_types": ("Conv",)}, None),
])
def test_include_exclude_change_what_is_quantized(
    conv_model: Path, conv_npz: Path, conv_heldout: np.ndarray, tmp_path: Path, options: dict[str, Any],
    convs: int | None,
) -> None:
    out = tmp_path / "q.onnx"
    if convs is None:
        with pytest.raises(InputError, match="nothing to quantize"):
            _calibrate(conv_model, out, conv_npz, method="minmax", preset_options=options)
        assert list(tmp_path.iterdir()) == []  # no model, cache or manifest from a refused run
        return
    result = _calibrate(conv_model, out, conv_npz, method="minmax", preset_options=options)
    assert count_dq_fed(out, "Conv") == convs
    assert result.summary["quantized_nodes"] == {"Conv": convs}
    assert result.kernels["integer_ops"].get("QLinearConv") == convs
    assert sqnr_vs_float(conv_model, out, conv_heldout) >= MIN_SQNR_DB


def test_op_types_select_within_the_mlp(mlp_model: Path, mlp_npz: Path, tmp_path: Path) -> None:
    result = _calibrate(mlp_model, tmp_path / "q.onnx", mlp_npz, method="minmax",
                        preset_options={"op_types": ("Gemm",)})
    assert result.summary["quantized_nodes"] == {"Gemm": 2}
    assert count_dq_fed(result.output, "MatMul") == 0 and count_dq_fed(result.output, "Gemm") == 2


def test_progress_counts_every_pass_up_to_the_total(conv_model: Path, conv_npz: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    config = CalibrateConfig(model=conv_model, output=tmp_path / "q.onnx", data=DataConfig(conv_npz),
                             method="percentile", batch_size=8, threads=1)
    calibrate_model(config, lambda done, total: calls.append((done, total)))
    total = 2 * 12  # two passes over 12 samples
    assert calls == [(8, total), (12, total), (20, total), (24, total)]


def test_bad_config_values_are_refused(conv_model: Path, conv_npz: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no calibration data"):
        CalibrateConfig(model=conv_model, output=tmp_path / "q.onnx")
    with pytest.raises(InputError, match="overwrite"):
        CalibrateConfig(model=conv_model, output=conv_model, data=DataConfig(conv_npz))
    with pytest.raises(ValueError, match="batch_size"):
        CalibrateConfig(model=conv_model, output=tmp_path / "q.onnx", data=DataConfig(conv_npz), batch_size=0)
