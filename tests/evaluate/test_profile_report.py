"""One report for several models x backends: skipped backends, precision, INT8 coverage, FP16 rows, and the
report folder (markdown, self-contained HTML with two charts, profile.json v2), through the API and the CLI.

Real ORT CPU sessions on tiny conv models; the QDQ model is made by qdeploy's own quantizer. ort-cuda is
unavailable on CPU-only machines, which is exactly the skipped-row case (tests that need it to be
unavailable skip where onnxruntime-gpu is installed).
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from profile_conv_models import conv_weights, numpy_conv_relu, write_conv_model
from qdeploy_cli.main import cli

from qdeploy.errors import BackendUnavailableError, InputError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.evaluate.precision import (
    CPU_FP16_NOTE,
    CUDA_INT8_NOTE,
    detect_precision,
    fp16_copy,
    int8_coverage,
)
from qdeploy.evaluate.profile import ProfileConfig, ProfileReport, profile_models
from qdeploy.evaluate.report import HEADERS, SCHEMA_VERSION, summary_rows, upgrade_profile_dict
from qdeploy.evaluate.report_html import REPORT_FILES, accuracy_figure, latency_figure, write_report
from qdeploy.graph.io import load_model, save_model
from qdeploy.trt.fp16 import to_float16
from qdeploy.trt.fusion import check_placement

#: FP16 weights and activations on a 27-tap conv: ~75 dB measured; 40 dB is the named floor for "FP16-exact".
MIN_FP16_SQNR_DB = 40.0
#: Calibrated INT8 of the tiny conv: ~48 dB measured; well above this, well below FP16.
MIN_QDQ_SQNR_DB = 30.0
FAST = {"warmup": 1, "iterations": 5, "threads": 1}
CLI_FAST = ["--warmup", "1", "--iterations", "4", "--threads", "1"]


def _cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


needs_no_cuda = pytest.mark.skipif(_cuda_available(), reason="ort-cuda is available here: no skipped row")


def _qdq_model(model: ir.Model, w: np.ndarray, b: np.ndarray) -> ir.Model:
    """The conv+relu model quantized by qdeploy's ort-cpu preset, with min/max ranges from numpy."""
    from qdeploy.quant.presets import get_preset
    from qdeploy.quant.quantize import quantize, tensors_to_calibrate
    from qdeploy.types import TensorRange

    config = get_preset("ort-cpu-int8")
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 8, 8))
    y = numpy_conv_relu(x, w, b)
    bounds = {"x": (0.0, 1.0)}
    ranges = {}
    for name in tensors_to_calibrate(model, config):
        lo, hi = bounds.get(name, (0.0, float(y.max())))
        ranges[name] = TensorRange(name, lo, hi, lo, hi, 0.0, "minmax", 1)
    return quantize(model, ranges, config)


@pytest.fixture
def float_and_qdq(tmp_path: Path) -> tuple[Path, Path]:
    w, b = conv_weights()
    fp32 = write_conv_model(tmp_path / "models" / "float.onnx", w, b)
    qdq = save_model(_qdq_model(load_model(fp32), w, b), tmp_path / "models" / "int8.onnx")
    return fp32, qdq


def _profile(models: list[Path], **kw: object) -> ProfileReport:
    return profile_models(models, ProfileConfig(**{**FAST, **kw}))


@needs_no_cuda
def test_unavailable_backend_becomes_skipped_rows(float_and_qdq: tuple[Path, Path]) -> None:
    report = _profile(list(float_and_qdq), backends=("ort-cpu", "ort-cuda"))
    cpu = [("float.onnx", "ort-cpu"), ("int8.onnx", "ort-cpu")]
    cuda = [("float.onnx", "ort-cuda"), ("int8.onnx", "ort-cuda")]
    assert [(m.name, m.backend) for m in report.models] == cpu
    assert [(s.name, s.backend) for s in report.skipped] == cuda
    assert all("onnxruntime-gpu" in s.reason for s in report.skipped)
    assert [s.precision for s in report.skipped] == ["fp32", "int8-qdq"]
    assert [(r.name, r.backend) for r in report.rows()] == cpu + cuda
    assert report.reference_backend == "ort-cpu"
    assert report.machine["backend"] == "ort-cpu" and report.machine["backends"] == ["ort-cpu", "ort-cuda"]


@needs_no_cuda
def test_unavailable_first_backend_hands_the_reference_to_the_next(float_and_qdq: tuple[Path, Path]) -> None:
    report = _profile([float_and_qdq[0]], backends=("ort-cuda", "ort-cpu"))
    assert report.reference_backend == "ort-cpu"
    assert report.models[0].accuracy["y"]["sqnr_db"] == float("inf")
    assert [r.backend for r in report.rows()] == ["ort-cuda", "ort-cpu"]


@needs_no_cuda
def test_no_available_backend_raises(float_and_qdq: tuple[Path, Path]) -> None:
    with pytest.raises(BackendUnavailableError, match="none of the backends") as info:
        _profile([float_and_qdq[0]], backends=("ort-cuda", "tensorrt"))
    assert "ort-cuda:" in info.value.hint and "tensorrt:" in info.value.hint
    with pytest.raises(BackendUnavailableError, match="backend 'ort-cuda' is not available"):
        _profile([float_and_qdq[0]], backends=("ort-cuda",))
    with pytest.raises(InputError, match="unknown backend"):
        _profile([float_and_qdq[0]], backends=("ort-cpu", "nope"))


def test_precision_is_read_from_the_graph(float_and_qdq: tuple[Path, Path]) -> None:
    fp32, qdq = (load_model(p) for p in float_and_qdq)
    assert detect_precision(fp32) == "fp32"
    assert detect_precision(qdq) == "int8-qdq"  # int32 bias DQs do not make it "int32"
    assert detect_precision(to_float16(fp32)) == "fp16"
    assert detect_precision(to_float16(qdq)) == "int8-qdq+fp16"
    int4 = """<ir_version: 10, opset_import: ["" : 21]>
    g (float[1,2] x) => (float[1,3] y)
    <int4[2,3] w = {1, -2, 3, 4, -5, 6}, float ws = {0.1}>
    { wd = DequantizeLinear(w, ws)
      y = MatMul(x, wd) }"""
    assert detect_precision(ir.serde.deserialize_model(onnx.parser.parse_model(int4))) == "int4-weights"
    report = _profile(list(float_and_qdq))
    assert [m.precision for m in report.models] == ["fp32", "int8-qdq"]


def test_int8_coverage_is_the_fusion_check_per_target(float_and_qdq: tuple[Path, Path]) -> None:
    fp32, qdq = (load_model(p) for p in float_and_qdq)
    ort_check, trt_check = check_placement(qdq, "ort-cpu"), check_placement(qdq, "tensorrt")
    assert ort_check.quantized >= 1
    report = _profile(list(float_and_qdq))
    float_row, qdq_row = report.models
    assert float_row.coverage is None
    assert (qdq_row.coverage.int8, qdq_row.coverage.quantized) == (ort_check.int8, ort_check.quantized)
    assert summary_rows(report)[1][-1] == f"{ort_check.int8}/{ort_check.quantized}"
    trt = int8_coverage(qdq, "tensorrt")
    assert (trt.int8, trt.quantized, trt.target) == (trt_check.int8, trt_check.quantized, "tensorrt")
    cuda = int8_coverage(qdq, "ort-cuda")
    assert (cuda.int8, cuda.quantized, cuda.target) == (0, ort_check.quantized, None)
    assert cuda.note == CUDA_INT8_NOTE
    assert int8_coverage(fp32, "ort-cuda") is None
    # an ort-cuda row shows the reason in its INT8 cell, in the words of the deployment docs
    cuda_report = dataclasses.replace(report, models=(dataclasses.replace(qdq_row, backend="ort-cuda",
                                                                          coverage=cuda),),
                                      config=ProfileConfig(backends=("ort-cuda",)))
    cell = summary_rows(cuda_report)[0][-1]
    assert cell == f"0/{ort_check.quantized} (CUDA EP has no static INT8 kernels: QDQ runs as float)"


def test_fp16_copy_keeps_float32_io_and_matches_float(float_and_qdq: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    from qdeploy.backends import SessionOptions, get_backend

    fp32_path = float_and_qdq[0]
    fp16_path = fp16_copy(fp32_path, tmp_path / "float.fp16.onnx")
    model = load_model(fp16_path)
    assert [v.dtype for v in (*model.graph.inputs, *model.graph.outputs)] == [ir.DataType.FLOAT] * 2
    assert {v.const_value.dtype for v in model.graph.initializers.values()} == {ir.DataType.FLOAT16}
    x = {"x": np.random.default_rng(3).uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)}
    backend, options = get_backend("ort-cpu"), SessionOptions(threads=1)
    with backend.open(fp32_path, options) as ref, backend.open(fp16_path, options) as half:
        want, got = ref.run(x)["y"], half.run(x)["y"]
    assert got.dtype == np.float32
    assert sqnr_db(want, got) >= MIN_FP16_SQNR_DB


def test_fp16_flag_adds_an_fp16_row_for_float_models_only(float_and_qdq: tuple[Path, Path]) -> None:
    report = _profile(list(float_and_qdq), fp16=True)
    names = [(m.name, m.precision, m.variant) for m in report.models]
    assert names == [("float.onnx", "fp32", None), ("float.onnx (fp16)", "fp16", "fp16"),
                     ("int8.onnx", "int8-qdq", None)]
    fp16_row = report.models[1]
    assert fp16_row.path == str(float_and_qdq[0])
    assert fp16_row.size_bytes < report.models[0].size_bytes  # float16 weights: a smaller file
    assert MIN_FP16_SQNR_DB <= fp16_row.worst_accuracy()["sqnr_db"] < float("inf")
    assert MIN_QDQ_SQNR_DB <= report.models[2].worst_accuracy()["sqnr_db"] < MIN_FP16_SQNR_DB + 20
    assert fp16_row.note == CPU_FP16_NOTE and "not FP16 speed" in report.to_markdown()


def _table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


@needs_no_cuda
def test_report_folder_has_markdown_html_charts_and_json(float_and_qdq: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    report = _profile(list(float_and_qdq), backends=("ort-cpu", "ort-cuda"))
    out = tmp_path / "report"
    paths = write_report(report, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)  # no temp files left behind
    table = _table_lines(paths["report.md"].read_text())
    assert table[0] == "| " + " | ".join(HEADERS) + " |"
    pairs = [tuple(cell.strip() for cell in line.split("|")[1:3]) for line in table[2:]]
    every = [(m, b) for m in ("float.onnx", "int8.onnx") for b in ("ort-cpu", "ort-cuda")]
    assert sorted(pairs) == sorted(every)  # one row per model x backend
    assert "ort-cuda: skipped: " in paths["report.md"].read_text()
    page = paths["report.html"].read_text()
    assert page.count("<svg") == 2 and 'id="latency-chart"' in page and 'id="accuracy-chart"' in page
    for svg in page.split("<svg")[1:]:  # each inline chart is well-formed XML on its own
        ET.fromstring("<svg" + svg[: svg.index("</svg>")] + "</svg>")
    assert "<script" not in page and "src=" not in page  # self-contained
    data = json.loads(paths["profile.json"].read_text())
    assert data["version"] == SCHEMA_VERSION == 2
    assert [(r["name"], r["backend"]) for r in data["models"]] == [("float.onnx", "ort-cpu"),
                                                                   ("int8.onnx", "ort-cpu")]
    assert data["models"][1]["coverage"]["cell"] == "1/1" and data["models"][1]["precision"] == "int8-qdq"
    assert [r["backend"] for r in data["skipped"]] == ["ort-cuda", "ort-cuda"]


def test_charts_plot_one_mark_per_measured_row(float_and_qdq: tuple[Path, Path]) -> None:
    report = _profile(list(float_and_qdq), fp16=True)
    bars = latency_figure(report).axes[0]
    heights = [patch.get_height() for patch in bars.patches]
    assert heights == pytest.approx([m.latency_ms.p50 for m in report.models])
    whisker_tops = np.concatenate([seg[:, 1].max(keepdims=True) for lc in bars.collections
                                   for seg in lc.get_segments()])
    assert whisker_tops == pytest.approx([m.latency_ms.p99 for m in report.models])
    scatter = accuracy_figure(report).axes[0]
    points = np.asarray(np.concatenate([np.asarray(c.get_offsets()) for c in scatter.collections
                                        if len(c.get_offsets())]))
    assert len(points) == len(report.models)
    assert points[:, 0] == pytest.approx([m.latency_ms.p50 for m in report.models])
    finite = [m.worst_accuracy()["sqnr_db"] for m in report.models[1:]]
    assert points[1:, 1] == pytest.approx(finite)
    assert points[0, 1] > max(finite)  # the reference (inf dB) is drawn above every finite row
    labels = [t.get_text() for t in scatter.texts]
    assert len(labels) == len(report.models) and all(" on ort-cpu" in t for t in labels)


def test_version_1_json_stays_readable(float_and_qdq: tuple[Path, Path]) -> None:
    current = _profile([float_and_qdq[0]]).to_dict()
    assert upgrade_profile_dict(current) == current
    v1 = {"format": "qdeploy-profile", "version": 1, "reference": "a.onnx", "timing_mode": "interleaved",
          "machine": {"backend": "ort-cpu"}, "config": {"backend": "ort-cpu"}, "inputs": {},
          "models": [{"name": "a.onnx", "latency_ms": {"p50": 1.0}}]}
    up = upgrade_profile_dict(v1)
    assert up["version"] == 2 and up["backends"] == ["ort-cpu"] and up["skipped"] == []
    assert up["models"][0]["backend"] == "ort-cpu" and up["models"][0]["precision"] == "unknown"
    assert v1["version"] == 1 and "backend" not in v1["models"][0]  # the input is not modified
    with pytest.raises(InputError, match="version 3"):
        upgrade_profile_dict({**v1, "version": 3})


def test_config_normalizes_backends() -> None:
    config = ProfileConfig(backends=["ort-cuda", "ort-cpu", "ort-cuda"])
    assert config.backends == ("ort-cuda", "ort-cpu") and config.backend == "ort-cuda"
    assert ProfileConfig(backend="ort-cuda").backends == ("ort-cuda",)
    with pytest.raises(ValueError, match="non-empty"):
        ProfileConfig(backends=("ort-cpu", ""))


def _invoke(*args: str | Path) -> object:
    return CliRunner().invoke(cli, ["profile", *map(str, args)], catch_exceptions=False)


@needs_no_cuda
def test_cli_report_dir_with_two_backends(float_and_qdq: tuple[Path, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r"
    backends = ["--backend", "ort-cpu", "--backend", "ort-cuda"]
    result = _invoke(*float_and_qdq, *backends, *CLI_FAST, "--report", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    assert not (tmp_path / "profile.json").exists()  # with --report, -o is written only when given
    for name in REPORT_FILES:
        assert f"wrote {out / name}" in result.stderr
    assert "skipped" in result.stdout and "onnxruntime-gpu" in result.stdout
    assert len(_table_lines((out / "report.md").read_text())) == 2 + 4


def test_cli_fp16_json_and_explicit_output(float_and_qdq: tuple[Path, Path], tmp_path: Path) -> None:
    out, json_path = tmp_path / "r", tmp_path / "p.json"
    result = _invoke(float_and_qdq[0], "--fp16", *CLI_FAST, "--report", out, "-o", json_path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert json.loads(json_path.read_text()) == data == json.loads((out / "profile.json").read_text())
    assert [(r["name"], r["precision"], r["variant"]) for r in data["models"]] == [
        ("float.onnx", "fp32", None), ("float.onnx (fp16)", "fp16", "fp16")]
    assert data["models"][1]["accuracy"]["y"]["sqnr_db"] >= MIN_FP16_SQNR_DB


@needs_no_cuda
def test_cli_no_available_backend_exits_3(float_and_qdq: tuple[Path, Path], tmp_path: Path) -> None:
    result = _invoke(float_and_qdq[0], "--backend", "ort-cuda", "--backend", "tensorrt", *CLI_FAST,
                     "--report", tmp_path / "r")
    assert result.exit_code == 3
    assert "none of the backends" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()
