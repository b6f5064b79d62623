"""What one DQC step costs on NGswin x2 on this CPU: why no real DQC schedule ran on it (issue 13).

Times, on one 64x64 LR training patch (the calibration patch size), the W4A4 QDQ model of
``ngswin_lowbit.py`` (``--method dobi --smooth 0.7 --rotate``):

- ONNX Runtime forward (plain Q/DQ math, ``basic``): the cost of calibration and evaluation;
- qdeploy's torch executor forward without gradients (DQC's teacher/evaluation passes);
- the executor forward + backward with the learnable scales attached, i.e. one sample of one DQC step.

Each timing is the median of ``--repeats`` runs after one warm-up; the projection multiplies the last one
by the samples per step and the schedule (2DQuant: 3,000 iterations at batch 32). Results land in
``benchmarks/results/ngswin_dqc_cost.{md,json}``.

    python benchmarks/ngswin_dqc_cost.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "exports" / "ngswin_lowbit"
OUT = REPO / "benchmarks" / "results" / "ngswin_dqc_cost"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def float_teacher(model_path: Path) -> ir.Model:
    """The float model DQC would distil from: the export, smoothed and rotated as the QDQ model was."""
    import onnx_ir as ir

    from qdeploy.calib.cache import load_cache
    from qdeploy.quant import get_preset
    from qdeploy.quant.quantize import calibration_model
    from qdeploy.quant.smoothing import smooth_for_calibration

    cache = load_cache(model_path.with_name(model_path.stem + ".calib.json"))
    preset = cache.extra["preset"]
    config = get_preset("lowbit-sim", bits=4, smooth_alpha=preset["smooth_alpha"], rotate_inputs=True)
    smoothed, _ = smooth_for_calibration(ir.load(str(WORK / "float.onnx")), config, cache.extra["smooth"],
                                         lambda m, n: {})
    return calibration_model(smoothed, config)


def measure(model_path: Path, repeats: int) -> dict[str, float]:
    import onnx_ir as ir
    import onnxruntime as ort
    import torch

    from qdeploy.refine.learnable import LearnableQDQ
    from qdeploy.refine.quantizers import find_quantizers
    from qdeploy.torchexec import TorchGraph

    x = np.load(WORK / "calib.npz")["input"][:1]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    qdq = ir.load(str(model_path))
    graph = TorchGraph(qdq)
    learn = LearnableQDQ(qdq, find_quantizers(qdq, float_teacher(model_path), True), torch.device("cpu"))
    feeds = {"input": torch.from_numpy(x)}

    def step() -> None:
        out = next(iter(graph.run(feeds, learn.overrides()).values()))
        out.abs().mean().backward()

    def forward() -> None:
        with torch.no_grad():
            graph.run(feeds)

    return {"ort_forward_s": timed(lambda: session.run(None, {"input": x}), repeats),
            "torch_forward_s": timed(forward, repeats), "torch_step_per_sample_s": timed(step, repeats),
            "torch_threads": torch.get_num_threads(), "quantizers": len(learn.log_scales)}


def report(result: dict) -> str:
    per = result["torch_step_per_sample_s"]
    lines = ["# NGswin x2: the cost of one DQC step on this CPU", "",
             f"Command: `{result['command']}`. Model: `{result['model']}` (W4A4, DOBI + smooth 0.7 + rotate). "
             "One 64x64 LR patch; median of the repeats after a warm-up. Measured on the shared 2-core AVX2 "
             f"machine ({result['load']}; timings taken under a load of 5-6 were 20x slower, so only a "
             "near-idle run is kept here).", "",
             "| what | seconds |", "|---|---|",
             f"| ONNX Runtime forward (Q/DQ math) | {result['ort_forward_s']:.2f} |",
             f"| torch executor forward, no gradients | {result['torch_forward_s']:.2f} |",
             f"| torch executor forward + backward, {result['quantizers']} learnable scales (one sample) "
             f"| {per:.2f} |", "",
             "| schedule | projected hours (1 process, this machine) |", "|---|---|"]
    for iters, batch in ((3000, 32), (500, 4), (200, 4)):
        lines.append(f"| {iters} iterations x batch {batch} | {iters * batch * per / 3600:.1f} |")
    lines += ["", "Reading: a schedule like 2DQuant's (3,000 x 32) is out of reach on 2 CPU cores; a few hundred "
              "iterations at batch 4 fit in an hour, which is what `ngswin_lowbit.md`'s DQC row runs (resumable "
              "from its checkpoint). Getting closer to 2DQuant's schedule needs a block-wise engine (cache each "
              "block's float inputs, train one block at a time) or a GPU: not done.", ""]
    return "\n".join(lines)


def main() -> None:
    import os
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=WORK / "w4a4_DOBI_smooth_rot.onnx")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report-only", action="store_true", help="rewrite the md from the stored JSON")
    args = ap.parse_args()
    if args.report_only:
        print(report(json.loads(OUT.with_suffix(".json").read_text())))
        OUT.with_suffix(".md").write_text(report(json.loads(OUT.with_suffix(".json").read_text())))
        return
    if not args.model.exists():
        sys.exit(f"{args.model} is missing: run python benchmarks/ngswin_lowbit.py --bits 4 --methods DOBI+smooth+rot")
    result = measure(args.model, args.repeats)
    result |= {"command": "python benchmarks/ngswin_dqc_cost.py " + " ".join(sys.argv[1:]),
               "model": str(args.model.relative_to(REPO)) if args.model.is_relative_to(REPO) else str(args.model),
               "load": "load average {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg())}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=1))
    text = report(result)
    OUT.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
