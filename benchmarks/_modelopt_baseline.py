"""NVIDIA ModelOpt's ONNX PTQ (``modelopt.onnx.quantization.quantize``) as a baseline, run in its own venv.

ModelOpt pins its own onnx / onnxruntime(-gpu) versions, so it lives in a separate virtual environment
(``QDEPLOY_MODELOPT_PYTHON``, default ``/work/venv-modelopt/bin/python``) and this file is both the
caller (:func:`modelopt_quantize`, imported by the benchmarks) and the worker that the venv's Python runs
(``python _modelopt_baseline.py --worker ...``). The worker imports nothing from qdeploy.

Settings: ``quantize_mode="int8"``, ModelOpt's default calibration method and default op set; only
``calibration_eps=["cpu"]`` (the machine has no GPU) and the calibration feeds are given, plus
``high_precision_dtype="fp32"`` where the installed version has that option (its default converts the
non-quantized rest of the graph to FP16 for TensorRT, which ORT CPU runs as casts around float kernels:
that would measure ModelOpt's TensorRT packaging, not its calibration). Every such choice is recorded.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PYTHON", "modelopt_python", "modelopt_quantize"]

DEFAULT_PYTHON = Path("/work/venv-modelopt/bin/python")
_TIMEOUT_S = 3600


def modelopt_python() -> Path | None:
    """The ModelOpt venv's Python (``QDEPLOY_MODELOPT_PYTHON`` or the default path), or None if absent."""
    path = Path(os.environ.get("QDEPLOY_MODELOPT_PYTHON", str(DEFAULT_PYTHON)))
    return path if path.is_file() else None


def modelopt_quantize(float_path: Path, out_path: Path, npz: Path, threads: int) -> dict[str, Any]:
    """Quantize ``float_path`` with ModelOpt on the feeds in ``npz``; the worker's JSON record.

    The record has ``ok`` and either ``seconds`` (the ``quantize`` call alone, no interpreter start-up),
    ``version`` and ``settings``, or ``reason`` (why it could not run: no venv, import error, exception).
    """
    python = modelopt_python()
    if python is None:
        return {"ok": False, "skipped": True,
                "reason": f"no ModelOpt venv: set QDEPLOY_MODELOPT_PYTHON or create {DEFAULT_PYTHON}"}
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", "--model", str(float_path),
           "--out", str(out_path), "--npz", str(npz), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=_TIMEOUT_S, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        return {**json.loads(lines[-1]), "command": " ".join(cmd)}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {"ok": False, "reason": f"worker exit {proc.returncode}: " + " | ".join(tail), "command": " ".join(cmd)}


# ------------------------------------------------------------------------------------------ worker side


def _limit_ort_threads(threads: int) -> None:
    """Make every ``onnxruntime.SessionOptions()`` ModelOpt creates use ``threads`` intra-op threads."""
    import onnxruntime as ort

    base = ort.SessionOptions

    class _Options(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.intra_op_num_threads = threads
            self.inter_op_num_threads = 1

    ort.SessionOptions = _Options  # type: ignore[misc]


def _settings(quantize: Any) -> dict[str, Any]:
    """The keyword arguments given to ``quantize`` besides paths and data (only those it accepts)."""
    params = inspect.signature(quantize).parameters
    settings: dict[str, Any] = {"quantize_mode": "int8", "calibration_eps": ["cpu"]}
    if "high_precision_dtype" in params:
        settings["high_precision_dtype"] = "fp32"
    return settings


def _defaults(quantize: Any) -> dict[str, str]:
    """ModelOpt's own defaults for the settings left alone (recorded, so 'default' is visible)."""
    params = inspect.signature(quantize).parameters
    keys = ("calibration_method", "op_types_to_quantize", "high_precision_dtype", "calibration_eps",
            "calibrate_per_node", "use_external_data_format")
    return {k: repr(params[k].default) for k in keys if k in params}


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    _limit_ort_threads(args.threads)
    try:
        import modelopt
        from modelopt.onnx.quantization import quantize
    except Exception as exc:
        return {"ok": False, "reason": f"import modelopt failed: {type(exc).__name__}: {exc}"}
    with np.load(args.npz) as data:
        feeds = {k: data[k] for k in data.files}
    settings = _settings(quantize)
    start = time.perf_counter()
    quantize(onnx_path=str(args.model), calibration_data=feeds, output_path=str(args.out), **settings)
    seconds = time.perf_counter() - start
    import onnxruntime as ort

    return {"ok": True, "seconds": seconds, "version": modelopt.__version__, "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers(), "settings": settings, "defaults": _defaults(quantize)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help="run the quantization (inside the ModelOpt venv)")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--npz", type=Path, required=True, help="calibration feeds keyed by input name")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not args.worker:
        print(json.dumps(modelopt_quantize(args.model, args.out, args.npz, args.threads)))
        return
    try:
        record = _worker(args)
    except Exception as exc:
        record = {"ok": False, "reason": f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"}
    print(json.dumps(record))


if __name__ == "__main__":
    sys.exit(main())
