"""`qdeploy demo`: the end-to-end path on the bundled ABPN x3 and bundled images."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo_cmd"]


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("exports/demo"), show_default=True,
              help="Where the artifacts go.")
@click.option("--method", default="auto", show_default=True,
              help="Calibration observer (auto: checked on held-out data and repaired; or minmax, percentile, "
                   "entropy, mse, dobi).")
@click.option("--preset", default="ort-cpu-int8", show_default=True, help="Quantization preset.")
@click.option("--iterations", type=int, default=10, show_default=True, help="Timed rounds per model.")
@click.option("--threads", type=int, default=2, show_default=True, help="ONNX Runtime threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the result table as JSON on stdout.")
def demo_cmd(workdir: Path, method: str, preset: str, iterations: int, threads: int, as_json: bool) -> None:
    """Export ABPN x3 -> calibrate INT8 -> profile on ORT CPU -> evaluate SR, in one go.

    \b
    Uses only what ships with qdeploy: the ABPN x3 weights the project trained and photos from
    scikit-image's package (or images qdeploy renders itself). "p50 vs float" is the INT8 p50
    latency over the float p50 (the two p50 columns). The standard benchmarks (Set5, Set14, B100)
    are not shipped: unpack the EDSR benchmark pack (https://cv.snu.ac.kr/research/EDSR/benchmark.tar)
    and point at one set, e.g.:
      qdeploy eval sr exports/demo/abpn_x3.onnx exports/demo/abpn_x3.qdq.onnx \\
          --dataset benchmark/Set5 --scale 3
    """
    from qdeploy_cli._common import console, print_json
    from rich.table import Table

    from qdeploy.demo import DemoConfig, run_demo

    con = console(stderr=as_json)  # under --json stdout is the JSON document only
    cfg = DemoConfig(workdir=workdir, method=method, preset=preset, iterations=iterations, threads=threads)
    result = run_demo(cfg, log=lambda msg: con.print(msg, markup=False))
    if as_json:
        print_json({"rows": result.rows, "image_source": result.image_source,
                    "accuracy_basis": result.accuracy_basis,
                    "artifacts": {k: str(v) for k, v in result.artifacts.items()}})
        return
    table = Table(title=f"ABPN x3 on the bundled eval images ({result.image_source}); ORT CPU",
                  caption="p50 vs float = INT8 p50 / float p50")
    for col in ("model", "PSNR-Y dB", "SSIM-Y", "Δ dB", "p50 ms", "p50 vs float", "size KB"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in result.rows:
        table.add_row(r["model"], f"{r['psnr_y']:.3f}", f"{r['ssim_y']:.4f}", f"{r['delta_db']:+.3f}",
                      f"{r['latency_p50_ms']:.1f}" if "latency_p50_ms" in r else "-",
                      f"{r['p50_ratio']:.2f}" if "p50_ratio" in r else "-",
                      f"{r['size_kb']:.0f}" if "size_kb" in r else "-")
    con.print(table)
    for name, path in result.artifacts.items():
        con.print(f"  {name}: {path}", markup=False)
