"""The README's first command: export ABPN x3 -> calibrate -> profile -> SR eval, on bundled data only.

Everything comes from the installed packages: the ABPN weights the project trained (``qdeploy_models``)
and photos that scikit-image ships (or images the project renders itself when it is absent), so the demo
runs on a fresh machine with no network and no ``../shared``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DemoConfig", "DemoResult", "demo_rows", "run_demo"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """Where to write and how hard to measure; defaults finish in about a minute on 2 cores."""

    workdir: Path = Path("exports/demo")
    method: str = "auto"
    preset: str = "ort-cpu-int8"
    profile_shape: tuple[int, ...] = (1, 3, 360, 640)
    iterations: int = 10
    threads: int | None = 2
    num_samples: int = 24
    crop: int = 96


@dataclass(frozen=True)
class DemoResult:
    """Paths of every artifact and the one table the demo prints (float vs INT8).

    ``accuracy_basis`` says what the rows' ``profile_sqnr_db`` was measured on (the profile's inputs);
    PSNR/SSIM are on ``image_source``.
    """

    float_model: Path
    qdq_model: Path
    rows: list[dict[str, Any]]
    image_source: str
    artifacts: dict[str, Path]
    accuracy_basis: str = ""


def _export(cfg: DemoConfig, log: Log) -> Path:
    from qdeploy.export import ExportConfig, export_model

    out = cfg.workdir / "abpn_x3.onnx"
    res = export_model(ExportConfig(spec="abpn-x3", output=out, input_shapes=((1, 3, 64, 64),), dynamic_hw=True))
    log(f"1/4 exported abpn-x3 -> {out} ({res.exporter_used} exporter, parity SQNR {res.parity.worst_sqnr_db:.1f} dB)")
    return out


def _calibrate(cfg: DemoConfig, float_path: Path, calib_dir: Path, log: Log) -> Path:
    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    out = cfg.workdir / "abpn_x3.qdq.onnx"
    from qdeploy.pipeline import default_holdout

    holdout = default_holdout(cfg.method, True, calib_dir, False)
    data = DataConfig(source=calib_dir, value_range="0-255", crop=cfg.crop, num_samples=cfg.num_samples, seed=0,
                      holdout=holdout)
    res = calibrate_model(CalibrateConfig(model=float_path, output=out, data=data, method=cfg.method,
                                          preset=cfg.preset))
    ints = sum(res.kernels.get("integer_ops", {}).values())
    log(f"2/4 calibrated ({cfg.method}, {cfg.preset}) on {calib_dir} -> {out}; {ints} integer kernels in ORT")
    if res.verified is not None:
        v = res.verified
        log(f"    check ({v.bar}): {'met' if v.met else 'NOT met'}, {len(v.changes)} tensor(s) repaired; "
            f"measured as {v.measured_on}")
    return out


def run_demo(cfg: DemoConfig, log: Log = print) -> DemoResult:
    """Run the four steps and return the float-vs-INT8 table (PSNR, delta, latency, size)."""
    from qdeploy_calib_data.demo import demo_calibration_dir, demo_eval_dir, demo_image_source

    from qdeploy.evaluate.profile import ProfileConfig, profile_models
    from qdeploy.sr.evaluate import SREvalConfig, evaluate_sr

    cfg.workdir.mkdir(parents=True, exist_ok=True)
    calib_dir = demo_calibration_dir(cfg.workdir / "calib_images")
    eval_dir = demo_eval_dir(cfg.workdir / "eval_images")
    float_path = _export(cfg, log)
    qdq_path = _calibrate(cfg, float_path, calib_dir, log)
    prof = profile_models([float_path, qdq_path], ProfileConfig(
        input_shapes=cfg.profile_shape, iterations=cfg.iterations, warmup=2, threads=cfg.threads,
        input_range=(0.0, 255.0)))
    log(f"3/4 profiled on ORT CPU at {'x'.join(map(str, cfg.profile_shape))}, {cfg.threads} threads, interleaved")
    sr = evaluate_sr([float_path, qdq_path], SREvalConfig(dataset=eval_dir, scale=3, threads=cfg.threads))
    log(f"4/4 evaluated x3 SR on {eval_dir}")
    arts = {"float": float_path, "qdq": qdq_path, "calibration_images": calib_dir, "eval_images": eval_dir,
            "manifest": cfg.workdir / "manifest.json"}
    return DemoResult(float_path, qdq_path, demo_rows(prof, sr, cfg.method), demo_image_source(), arts,
                      prof.accuracy_basis())


def demo_rows(prof: Any, sr: Any, method: str) -> list[dict[str, Any]]:
    """The float, INT8 and bicubic rows of the demo table from the profile and the SR report.

    ``p50_ratio`` is the INT8 p50 over the float p50, the very columns the table prints next to it
    (the profile's own ratio is a median of per-round ratios, a different statistic that need not
    match the p50s). ``profile_sqnr_db`` is measured on the profile's inputs (``prof.input_basis``).
    """
    scored = list(sr.models)
    base_p50 = prof.models[0].latency_ms.p50
    rows = []
    for label, score, prof_row in zip(("float32", f"int8 {method}"), scored, prof.models, strict=True):
        rows.append({
            "model": label, "psnr_y": score.psnr_y, "ssim_y": score.ssim_y,
            "delta_db": score.psnr_y - scored[0].psnr_y, "latency_p50_ms": prof_row.latency_ms.p50,
            "p50_ratio": prof_row.latency_ms.p50 / base_p50, "size_kb": prof_row.size_bytes / 1024,
            "profile_sqnr_db": prof_row.worst_accuracy().get("sqnr_db", float("inf")),
        })
    rows.append({"model": "bicubic", "psnr_y": sr.bicubic.psnr_y, "ssim_y": sr.bicubic.ssim_y,
                 "delta_db": sr.bicubic.psnr_y - scored[0].psnr_y})
    return rows
