"""profile_models on real ORT sessions of tiny conv models: timing statistics, accuracy, modes, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from profile_conv_models import conv_weights, numpy_conv_relu

from qdeploy.errors import BackendUnavailableError, InputError
from qdeploy.evaluate import ProfileConfig, ProfileReport, profile_models

# Float32 ORT vs the float64 numpy recomputation differ by ~1e-7 relative; the perturbation noise is ~35 dB
# below the signal, so the two SQNRs agree far better than this.
SQNR_TOL_DB = 0.05
MAX_ABS_TOL = 1e-4
# time-budget mode may overshoot by one round plus warm-up and session creation of tiny models.
BUDGET_SLACK_S = 10.0

FAST = {"warmup": 1, "iterations": 8, "threads": 1}


def _profile(models: list[Path], **kw: object) -> ProfileReport:
    return profile_models(models, ProfileConfig(**{**FAST, **kw}))


def test_latency_percentiles_are_ordered_and_counted(float_and_perturbed) -> None:
    a, b, _, _ = float_and_perturbed
    report = _profile([a, b], iterations=12)
    assert report.timing_mode == "interleaved"
    for m in report.models:
        lat = m.latency_ms
        assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
        assert lat.count == 12
        assert m.throughput_per_s == pytest.approx(1000.0 / lat.mean)
        assert m.session_create_s > 0
        assert m.size_bytes == Path(m.path).stat().st_size
    assert report.models[0].ratio_vs_first == 1.0
    assert report.models[1].ratio_vs_first > 0


def test_model_against_itself_is_exact(float_and_perturbed) -> None:
    a, _, _, _ = float_and_perturbed
    report = _profile([a, a])
    for m in report.models:
        acc = m.accuracy["y"]
        assert acc["sqnr_db"] == float("inf")
        assert acc["psnr_db"] == float("inf")
        assert acc["cosine"] == pytest.approx(1.0, abs=1e-12)
        assert acc["max_abs_error"] == 0.0


def test_perturbed_sqnr_matches_independent_numpy(float_and_perturbed) -> None:
    a, b, w, w2 = float_and_perturbed
    _, bias = conv_weights()
    lo, hi, seed = -1.0, 2.0, 7
    report = _profile([a, b], input_range=(lo, hi), seed=seed, inputs="random")
    assert report.input_basis == "uniform random inputs in -1..2 (seed 7)"
    x = np.random.default_rng(seed).uniform(lo, hi, size=(1, 3, 8, 8)).astype(np.float32)
    ref, out = numpy_conv_relu(x, w, bias), numpy_conv_relu(x, w2, bias)
    expected_sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2))
    got = report.models[1].accuracy["y"]
    assert np.isfinite(got["sqnr_db"]) and 20 < got["sqnr_db"] < 60
    assert got["sqnr_db"] == pytest.approx(expected_sqnr, abs=SQNR_TOL_DB)
    assert got["max_abs_error"] == pytest.approx(np.max(np.abs(ref - out)), abs=MAX_ABS_TOL)
    assert report.models[1].worst_accuracy()["sqnr_db"] == got["sqnr_db"]


def test_sequential_mode_uses_ratio_of_medians(float_and_perturbed) -> None:
    a, b, _, _ = float_and_perturbed
    report = _profile([a, b], interleave=False)
    assert report.timing_mode == "sequential"
    first, second = report.models
    assert second.ratio_vs_first == pytest.approx(second.latency_ms.p50 / first.latency_ms.p50)


@pytest.mark.parametrize("interleave", [True, False])
def test_time_budget_runs_at_least_min_iterations_and_stops(float_and_perturbed, interleave: bool) -> None:
    a, b, _, _ = float_and_perturbed
    budget = 0.3
    start = time.perf_counter()
    report = _profile([a, b], iterations=1, time_budget_s=budget, min_iterations=5, interleave=interleave)
    elapsed = time.perf_counter() - start
    counts = [m.latency_ms.count for m in report.models]
    assert min(counts) >= 5
    # tiny models run in well under a millisecond, so a 0.3 s budget means far more than 5 runs
    assert min(counts) > 20
    assert elapsed < budget + BUDGET_SLACK_S
    if interleave:
        assert counts[0] == counts[1]


def test_dynamic_dims_need_a_shape(write_model) -> None:
    path = write_model("dyn.onnx", *conv_weights(), input_shape="N, 3, H, W")
    dims = r"input 'x' has dynamic dims axis 0 \(N\), axis 2 \(H\), axis 3 \(W\)"
    with pytest.raises(InputError, match=dims):
        _profile([path])
    report = _profile([path], input_shapes=(2, 3, 5, 6))
    assert report.inputs == {"x": (2, 3, 5, 6)}
    assert report.to_dict()["inputs"] == {"x": [2, 3, 5, 6]}
    assert _profile([path], input_shapes={"x": (1, 3, 4, 4)}).inputs == {"x": (1, 3, 4, 4)}


def test_wrong_static_shape_is_an_input_error(float_and_perturbed) -> None:
    a, _, _, _ = float_and_perturbed
    with pytest.raises(InputError, match="axis 2 is fixed to 8"):
        _profile([a], input_shapes=(1, 3, 9, 9))
    with pytest.raises(InputError, match="inputs are"):
        _profile([a], input_shapes={"image": (1, 3, 8, 8)})


def test_backend_and_file_errors(float_and_perturbed, tmp_path: Path) -> None:
    import onnxruntime as ort

    a, _, _, _ = float_and_perturbed
    with pytest.raises(InputError, match="unknown backend 'nope'") as info:
        _profile([a], backend="nope")
    assert "ort-cpu" in info.value.hint
    with pytest.raises(InputError, match="not found"):
        _profile([tmp_path / "missing.onnx"])
    with pytest.raises(InputError, match="no models"):
        _profile([])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError) as cuda:
            _profile([a], backend="ort-cuda")
        assert "onnxruntime-gpu" in cuda.value.hint


def test_memory_is_measured_per_model(float_and_perturbed) -> None:
    a, b, _, _ = float_and_perturbed
    for m in _profile([a, b]).models:
        assert isinstance(m.peak_rss_increase_bytes, int) and m.peak_rss_increase_bytes >= 0


def test_to_dict_is_strict_json_with_the_documented_schema(float_and_perturbed) -> None:
    a, b, _, _ = float_and_perturbed
    data = _profile([a, b]).to_dict()
    text = json.dumps(data, allow_nan=False)  # raises if any inf/nan float slipped through
    assert json.loads(text) == data
    top = {"format", "version", "reference", "timing_mode", "machine", "config", "inputs", "models"}
    assert top <= set(data)
    assert data["reference"] == "float.onnx"
    assert {"cpu_model", "logical_cores", "vnni", "onnxruntime", "backend", "threads"} <= set(data["machine"])
    row = data["models"][0]
    assert {"name", "path", "size_bytes", "session_create_s", "latency_ms", "ratio_vs_first",
            "throughput_per_s",
            "megapixels_per_s", "peak_rss_increase_bytes", "accuracy", "accuracy_worst"} <= set(row)
    assert {"p50", "p90", "p99", "mean", "min", "count"} <= set(row["latency_ms"])
    assert row["accuracy"]["y"]["sqnr_db"] == "inf"
    assert isinstance(data["models"][1]["accuracy"]["y"]["sqnr_db"], float)
    assert row["megapixels_per_s"] == pytest.approx(64e-6 * row["throughput_per_s"])


def test_markdown_has_one_row_per_model(float_and_perturbed) -> None:
    a, b, _, _ = float_and_perturbed
    md = _profile([a, b]).to_markdown()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 4  # header, separator, two models
    assert "SQNR dB" in table[0] and "float.onnx" in table[2] and "perturbed.onnx" in table[3]
    assert "| inf | inf |" in table[2]


@pytest.mark.parametrize("bad", [
    {"warmup": -1}, {"iterations": 0}, {"time_budget_s": 0.0}, {"threads": 0},
    {"input_range": (1.0, 0.0)}, {"graph_optimization": "max"}, {"input_shapes": (1, 0, 4)},
])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        ProfileConfig(**bad)


def test_config_normalizes_list_shapes() -> None:
    assert ProfileConfig(input_shapes=[1, 3, 8, 8]).input_shapes == (1, 3, 8, 8)
    assert ProfileConfig(input_shapes={"x": [1, 3, 8, 8]}).input_shapes == {"x": (1, 3, 8, 8)}
