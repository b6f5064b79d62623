"""The README's first command, as a library call on small settings: the bundled path must work."""

from __future__ import annotations

from pathlib import Path

from qdeploy.demo import DemoConfig, run_demo

MAX_INT8_LOSS_DB = 0.10
"""INT8 (mse, ort-cpu-int8) may lose at most this much Y-PSNR vs float on the bundled eval photos."""

MIN_GAIN_OVER_BICUBIC_DB = 0.5
"""The trained ABPN must beat bicubic clearly; random weights would lose to it by tens of dB."""


def test_demo_runs_on_bundled_data_and_int8_keeps_quality(tmp_path: Path) -> None:
    cfg = DemoConfig(workdir=tmp_path / "demo", profile_shape=(1, 3, 48, 64), iterations=2, threads=1,
                     num_samples=6, crop=64)
    result = run_demo(cfg, log=lambda _msg: None)
    float_row, int8_row, bicubic_row = result.rows
    assert result.float_model.exists() and result.qdq_model.exists()
    assert (tmp_path / "demo" / "manifest.json").exists()
    assert float_row["psnr_y"] - bicubic_row["psnr_y"] >= MIN_GAIN_OVER_BICUBIC_DB, result.rows
    assert int8_row["delta_db"] >= -MAX_INT8_LOSS_DB, result.rows
    assert int8_row["size_kb"] < float_row["size_kb"] / 2, result.rows
