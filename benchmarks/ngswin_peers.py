"""Peers on NGswin x2: ONNX Runtime ``quantize_static``, NVIDIA ModelOpt ONNX PTQ, qdeploy INT4 weight-only.

Same model (``exports/ngswin_lowbit/float.onnx``, the pretrained NGswin x2 exported with dynamic H/W) and
the same calibration data as ``ngswin_lowbit.py`` (``calib.npz``: 32 LR 64x64 patches of the *training*
images, input ``input``, range 0-1; never a test set). Rows:

  * ``ort-w8a8-*``: ORT ``quantize_static``, QDQ, per-channel int8 weights, uint8 activations, on what ORT
    quantizes by default (``op_types_to_quantize=None``), calibration MinMax / Percentile / Entropy;
  * ``ort-w8a8-mm-*``: the same restricted to ``op_types_to_quantize=["MatMul", "Gemm"]``: every Linear's
    input and weight and both attention MatMuls' inputs, convolutions float (like-for-like with lowbit-sim);
  * ``ort-w4a4-*``: ORT's 4-bit QDQ types (QInt4 weights, QUInt4 activations), MatMul/Gemm and default ops;
  * ``modelopt-int8``: ModelOpt ONNX PTQ int8 (its default calibration and op set, ``_modelopt_baseline.py``);
  * ``int4w-bN``: ``qdeploy quantize-weights --block-size N`` (INT4 weight-only, activations float).

Scored by ``qdeploy eval sr MODEL --dataset SET --scale 2 --range 0-1 --threads 2 --graph-optimization basic``
on whole images. Resumable (rows in the JSON are skipped); ``--report-only`` rewrites the md.

    nice -n 19 .venv/bin/python benchmarks/ngswin_peers.py --sets Set5,Set14 [--rows ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _modelopt_baseline import modelopt_quantize  # noqa: E402
from generality import npz_feeds, ort_threads  # noqa: E402
from ngswin_lowbit import psnr, qdeploy  # noqa: E402 (one runner for both NGswin reports)

FLOAT_SET5 = 38.046
MM = ["MatMul", "Gemm"]
#: row -> (bits, ORT calibration method, op types or None for ORT's default set)
ORT_ROWS: dict[str, tuple[int, str, list[str] | None]] = {
    "ort-w8a8-minmax": (8, "MinMax", None), "ort-w8a8-percentile": (8, "Percentile", None),
    "ort-w8a8-mm-minmax": (8, "MinMax", MM), "ort-w8a8-mm-percentile": (8, "Percentile", MM),
    "ort-w4a4-mm-minmax": (4, "MinMax", MM), "ort-w4a4-mm-percentile": (4, "Percentile", MM),
    "ort-w4a4-minmax": (4, "MinMax", None),
    "ort-w8a8-entropy": (8, "Entropy", None), "ort-w8a8-mm-entropy": (8, "Entropy", MM),
}
BLOCKS = {"int4w-b32": 32, "int4w-b64": 64, "int4w-b128": 128}
ROWS = (*ORT_ROWS, "modelopt-int8", *BLOCKS)
CHUNK = 4  # samples per ORT calibration pass (bounds memory; MinMax exact, histograms merged by ORT)
NOTE = ("shared machine: 2 CPU cores with another engineer's benchmarks running at the same time, this "
        "script at nice 19, so every time is indicative only")


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def size_kib(path: Path) -> float:
    extra = path.with_name(path.name + ".data")
    return (path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)) / 1024


def eval_args(path: Path, dataset: Path, threads: int, level: str) -> list[str]:
    return ["eval", "sr", str(path), "--dataset", str(dataset), "--scale", "2", "--range", "0-1",
            "--threads", str(threads), "--graph-optimization", level, "--json"]


def quantized_ops(path: Path) -> dict[str, int]:
    """How many nodes of each op type read a DequantizeLinear output (what the tool quantized)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    hits = Counter(n.op_type for n in graph.node
                   if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dq.intersection(n.input))
    return dict(hits.most_common())



def pre_process(float_path: Path, work: Path, store: dict) -> Path:
    """ORT's ``quant_pre_process`` (made once; symbolic shape inference skipped if it cannot run)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "float.pre.onnx"
    if pre.exists() and "pre" in store:
        return pre
    start = time.perf_counter()
    try:
        quant_pre_process(str(float_path), str(pre))
        how = f"quant_pre_process({rel(float_path)}, WORK/float.pre.onnx)"
    except Exception as exc:  # ORT's documented fallback for graphs its symbolic inference cannot handle
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        how = (f"quant_pre_process({rel(float_path)}, WORK/float.pre.onnx, skip_symbolic_shape=True)  "
               f"# symbolic shape inference failed: {type(exc).__name__}")
    store["pre"] = {"seconds": time.perf_counter() - start, "command": how}
    return pre


def ort_kwargs(bits: int, method: str, ops: list[str] | None) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    act, wt = (QuantType.QUInt8, QuantType.QInt8) if bits == 8 else (QuantType.QUInt4, QuantType.QInt4)
    return {"quant_format": QuantFormat.QDQ, "per_channel": True, "activation_type": act, "weight_type": wt,
            "calibrate_method": getattr(CalibrationMethod, method), "op_types_to_quantize": ops}


def shown_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v.name if hasattr(v, 'name') else repr(v)}" for k, v in kwargs.items())


@contextmanager
def ort_chunks(n: int) -> Iterator[None]:
    """ORT's calibrators collect ``n`` samples per pass, merged by ORT (MinMax: exact; histograms: ORT's merge).

    ORT's own ``CalibMaxIntermediateOutputs`` is broken in 1.31: it clears the samples without computing them.
    """
    from onnxruntime.quantization import calibrate

    classes = (calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater)
    bases = [c.collect_data for c in classes]

    def wrap(base: Any) -> Any:
        def chunked(self: Any, reader: Any) -> None:
            while chunk := [f for f in (reader.get_next() for _ in range(n)) if f is not None]:
                base(self, _Reader(chunk))
        return chunked

    for cls, base in zip(classes, bases, strict=True):
        cls.collect_data = wrap(base)
    try:
        yield
    finally:
        for cls, base in zip(classes, bases, strict=True):
            cls.collect_data = base


class _Reader:
    def __init__(self, feeds: list) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)


def run_ort(row: str, pre: Path, npz: Path, out: Path, threads: int) -> dict[str, Any]:
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_static

    bits, method, ops = ORT_ROWS[row]
    kwargs = ort_kwargs(bits, method, ops)
    with ort_threads(threads), ort_chunks(CHUNK):
        start = time.perf_counter()
        quantize_static(str(pre), str(out), _Reader(npz_feeds(npz)), **kwargs)
        seconds = time.perf_counter() - start
    return {"tool": f"onnxruntime {ort.__version__} quantize_static", "bits": f"W{bits}A{bits}",
            "method": method, "ops": "MatMul/Gemm" if ops else "ORT default", "calib_s": seconds,
            "command": f"quantize_static(WORK/float.pre.onnx, WORK/{out.name}, reader(calib.npz, 1 patch/call), "
                       + shown_kwargs(kwargs) + f")  # calibrators fed {CHUNK} samples per pass"}



def run_modelopt(float_path: Path, npz: Path, out: Path, threads: int) -> dict[str, Any]:
    rec = modelopt_quantize(float_path, out, npz, threads)
    base = {"tool": "ModelOpt ONNX PTQ", "bits": "W8A8", "method": "int8, default calibration",
            "ops": "ModelOpt default", "command": (rec.get("command") or "").replace(str(REPO) + "/", "")}
    if not rec.get("ok") or not out.exists():
        return {**base, "error": rec.get("reason", "no output model written")}
    keep = ("version", "onnxruntime", "settings", "defaults")
    return {**base, "calib_s": rec["seconds"], "tool": f"ModelOpt {rec.get('version')} ONNX PTQ",
            **{k: rec.get(k) for k in keep}}


def run_int4w(row: str, float_path: Path, out: Path, threads: int) -> dict[str, Any]:
    block = BLOCKS[row]
    cmd = ["quantize-weights", str(float_path), "--block-size", str(block), "--json", "-o", str(out)]
    _, seconds = qdeploy(*cmd, threads=threads)
    return {"tool": "qdeploy quantize-weights", "bits": "W4 (weight-only)", "method": f"block {block}",
            "ops": "MatMul/Gemm weights", "calib_s": seconds,
            "command": "qdeploy " + " ".join(rel(Path(a)) if "/" in a else a for a in cmd)}



def build(row: str, paths: dict[str, Path], store: dict, threads: int) -> dict[str, Any]:
    out = paths["work"] / f"{row}.onnx"
    try:
        if row in ORT_ROWS:
            rec = run_ort(row, pre_process(paths["float"], paths["work"], store), paths["npz"], out, threads)
        elif row == "modelopt-int8":
            rec = run_modelopt(paths["float"], paths["npz"], out, threads)
        else:
            rec = run_int4w(row, paths["float"], out, threads)
    except Exception as exc:
        msg = (str(exc).strip().splitlines() or [""])
        return {"error": f"{type(exc).__name__}: {msg[0][:300]}", "model": rel(out)}
    if "error" not in rec:
        rec.update(size_kib=size_kib(out), quantized_ops=quantized_ops(out))
    return {**rec, "model": rel(out)}


def score(row: dict, sets: list[str], sr: Path, threads: int) -> None:
    for ds in sets:
        if ds in row or "error" in row or f"{ds}_error" in row:
            continue
        row["level"] = "basic"
        try:
            row[ds] = psnr(REPO / row["model"], sr / ds, threads)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            row[f"{ds}_error"] = ([ln for ln in lines if ln.startswith("error:")] or lines[-1:] or [""])[0][:400]
        print(f"  {ds}: {row.get(ds, row.get(f'{ds}_error'))}", flush=True)


def run(args: argparse.Namespace, store: dict, out_json: Path) -> None:
    sr = args.shared / "sr"
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    paths = {"work": work, "float": args.lowbit / "float.onnx", "npz": args.lowbit / "calib.npz"}
    sets = args.sets.split(",")
    store["run_command"] = "nice -n 19 .venv/bin/python benchmarks/ngswin_peers.py " + " ".join(sys.argv[1:])
    fl = store.setdefault("float", {"size_kib": size_kib(paths["float"]), "level": "basic"})
    for ds in sets:
        if ds not in fl:
            fl[ds] = psnr(paths["float"], sr / ds, args.threads)
            save(store, out_json)
    for row in args.rows.split(","):
        rec = store["rows"].get(row)
        if rec is None or ("error" in rec and args.retry):
            print(f"{row}: quantizing", flush=True)
            rec = build(row, paths, store, args.threads)
            store["rows"][row] = rec
            save(store, out_json)
        print(f"{row}: {rec.get('error') or 'ok'}", flush=True)
        score(rec, sets, sr, args.threads)
        save(store, out_json)


def save(store: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(store, indent=1))
    tmp.replace(path)



def ops_cell(ops: dict[str, int] | None) -> str:
    if not ops:
        return "-"
    main = [f"{k} {v}" for k, v in ops.items() if k in ("Conv", "Gemm", "MatMul")]
    other = sum(v for k, v in ops.items() if k not in ("Conv", "Gemm", "MatMul"))
    return ", ".join(main) + (f" (+{other} other nodes)" if other else "")


def quality_cells(row: dict, fl: dict, sets: list[str]) -> list[str]:
    cells = []
    for ds in sets:
        if ds in row:
            cells += [f"{row[ds]:.3f}", f"{row[ds] - fl[ds]:+.3f}"]
        else:
            cells += ["failed" if f"{ds}_error" in row or "error" in row else "-", "-"]
    return cells


def table(store: dict, sets: list[str]) -> str:
    fl = store["float"]
    head = ["row", "tool", "bits", "calibration", "quantized (nodes reading a DQ)", "eval level",
            *[c for ds in sets for c in (f"{ds} dB", f"Δ {ds}")], "calib s", "size KiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             "| float | PyTorch export | FP32 | - | - | basic | "
             + " | ".join(c for ds in sets for c in (f"{fl[ds]:.3f}", "0")) + f" | - | {fl['size_kib']:.0f} |"]
    for name in sorted(store["rows"], key=lambda k: ROWS.index(k) if k in ROWS else len(ROWS)):
        r = store["rows"][name]
        calib = f"{r['calib_s']:.0f}" if "calib_s" in r else "-"
        size = f"{r['size_kib']:.0f}" if "size_kib" in r else "-"
        lines.append(f"| {name} | {r.get('tool', '-')} | {r.get('bits', '-')} | {r.get('method', '-')} | "
                     f"{r.get('ops', '')}: {ops_cell(r.get('quantized_ops'))} | {r.get('level', '-')} | "
                     + " | ".join(quality_cells(r, fl, sets)) + f" | {calib} | {size} |")
    return "\n".join(lines)


def failures(store: dict) -> list[str]:
    out = []
    for name, r in store["rows"].items():
        for key in [k for k in r if k == "error" or k.endswith("_error")]:
            where = "quantizing" if key == "error" else f"evaluating {key[:-6]}"
            out.append(f"- `{name}` failed {where}: `{r[key]}`")
    return out or ["- none"]


def four_bit_note() -> str:
    from onnxruntime import __version__
    from onnxruntime.quantization import QuantType

    q4 = [t.name for t in QuantType if t.name in ("QInt4", "QUInt4")]
    return (f"ORT {__version__}'s `QuantType` has {', '.join(q4)}: the ORT W4A4 rows use QUInt4 activations and "
            "QInt4 per-channel weights; the float model is opset 18, so ORT writes these Q/DQ in the "
            "`com.microsoft` domain (its rule below opset 21)." if q4 else f"ORT {__version__}: no 4-bit QuantType.")


def tool_notes(store: dict) -> list[str]:
    """What ModelOpt and ORT's default op set put Q/DQ on (nodes reading a DequantizeLinear output)."""
    out, mo, ort = [], store["rows"].get("modelopt-int8", {}), store["rows"].get("ort-w8a8-minmax", {})
    if "quantized_ops" in mo:
        ops = mo["quantized_ops"]
        out.append(f"- ModelOpt: {mo['tool']} (its own venv, onnxruntime {mo.get('onnxruntime')}), settings "
                   f"`{mo.get('settings')}`, its defaults for the rest `{mo.get('defaults')}`. Its default op set "
                   f"quantized {', '.join(f'{k} {v}' for k, v in ops.items())} nodes: {ops.get('MatMul', 0)} of "
                   "the 82 MatMuls (the 80 attention MatMuls stay float), so it is not like-for-like with the "
                   "`-mm-` rows. It keeps weights as float initializers behind QuantizeLinear (TensorRT's form), "
                   "hence a file no smaller than float.")
    if "quantized_ops" in ort:
        out.append("- ORT's default op set (`op_types_to_quantize=None`) puts Q/DQ around nearly every op of this "
                   "graph: " + ", ".join(f"{k} {v}" for k, v in ort["quantized_ops"].items()) + " nodes read a "
                   "DQ output (ort-w8a8-minmax).")
    return out


def versus_ours(store: dict, lowbit: Path) -> list[str]:
    """Like-for-like: best ORT MatMul/Gemm row vs the best of ``ngswin_lowbit.json`` at the same bits."""
    if not lowbit.exists() or "Set5" not in store["float"]:
        return []
    ours = json.loads(lowbit.read_text())
    out = ["| bits | best ORT `-mm-` (Set5 Δ) | best qdeploy lowbit-sim (Set5 Δ, `ngswin_lowbit.json`) |",
           "|---|---|---|"]
    for bits in (8, 4):
        theirs = {k: r["Set5"] - store["float"]["Set5"] for k, r in store["rows"].items()
                  if k.startswith(f"ort-w{bits}a{bits}-mm-") and "Set5" in r}
        mine = {k: r["Set5"] - ours["float"]["Set5"] for k, r in ours["rows"].items()
                if k.startswith(f"W{bits}A{bits}|") and "Set5" in r}
        if theirs and mine:
            t, m = max(theirs, key=theirs.get), max(mine, key=mine.get)
            out.append(f"| W{bits}A{bits} | {t} ({theirs[t]:+.3f}) | {m.split('|')[1]} ({mine[m]:+.3f}) |")
    return out


def about() -> list[str]:
    """The docstring's description of the data and rows, as markdown."""
    parts = (__doc__ or "").split("\n\n")
    rows = [ln.strip().replace("  ", " ").replace("* ", "- ", 1) if ln.strip().startswith("*") else " " + ln.strip()
            for ln in parts[2].splitlines()]
    return [parts[1].replace("\n", " "), "", *"\n".join(rows).replace("\n ", " ").splitlines()]


def write_report(store: dict, out: Path) -> str:
    fl = store["float"]
    sets = [ds for ds in ("Set5", "Set14") if ds in fl]
    body = table(store, sets)
    cmds = [f"    {r['command']}" for r in store["rows"].values() if r.get("command")]
    pre = store.get("pre", {})
    text = "\n".join([
        "# NGswin x2: peer quantizers on the same model and calibration data (Y-PSNR dB, whole images)", "",
        f"Regenerate: `{store.get('run_command', 'nice -n 19 .venv/bin/python benchmarks/ngswin_peers.py')}` "
        "(resumable: rows in the JSON are skipped; `--report-only` rewrites this file; `--retry` re-runs "
        "failed rows).", "", *about(), "",
        f"**Times are indicative only**: {NOTE}. calib s = the quantizer's own call (ORT: `quantize_static` "
        f"alone; its `quant_pre_process`, run once, took {pre.get('seconds', float('nan')):.0f} s; ModelOpt: "
        "its `quantize` call in its venv; qdeploy: the whole CLI process). Float Set5 x2 reference: "
        f"{FLOAT_SET5} dB. Eval level: `basic` = `--graph-optimization basic` (plain Q/DQ math in float, "
        "no integer kernels) for every row, float included.", "", body, "",
        "Like-for-like with `ngswin_lowbit.md`: the `-mm-` rows quantize what `--preset lowbit-sim` quantizes "
        "(every Linear/Gemm input and weight, both attention MatMuls' inputs; convolutions float); the best "
        "rows are compared here (our side read from `ngswin_lowbit.json` when this file was written):", "",
        *versus_ours(store, out.parent / "ngswin_lowbit.json"), "",
        "## Notes", "", f"- {four_bit_note()}", *tool_notes(store),
        f"- ORT calibration feeds its calibrator {CHUNK} samples per pass to bound memory and lets ORT merge the "
        "passes (MinMax: exact min/max merge; Percentile/Entropy: ORT's histogram merge, as `generality.py` "
        "does). ORT's own option for this, `CalibMaxIntermediateOutputs`, is broken in 1.31.1: it clears "
        "the collected outputs without computing their ranges (`MinMaxCalibrater.collect_data`), so with 32 "
        "samples in blocks of 4 it fails with 'No data is collected.'",
        "- Calibration data: `exports/ngswin_lowbit/calib.npz` (32 training patches), never Set5/Set14.", "",
        "## Failures", "", *failures(store), "", "## Commands", "",
        f"    {pre.get('command', '')}", *cmds,
        *[f"    qdeploy {' '.join(eval_args(Path('MODEL'), Path('../shared/data/sr') / ds, 2, 'basic'))}"
          for ds in sets], ""])
    out.with_suffix(".md").write_text(text)
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--lowbit", type=Path, default=REPO / "exports" / "ngswin_lowbit",
                    help="ngswin_lowbit.py's work dir (float.onnx, calib.npz)")
    ap.add_argument("--work", type=Path, default=REPO / "exports" / "ngswin_peers")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ngswin_peers")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    ap.add_argument("--sets", default="Set5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--retry", action="store_true", help="re-run rows stored with an error")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    os.nice(max(0, 19 - os.nice(0)))  # the machine is shared: always lowest priority
    out_json = args.out.with_suffix(".json")
    store = json.loads(out_json.read_text()) if out_json.exists() else {"rows": {}}
    if not args.report_only:
        if not (args.lowbit / "float.onnx").exists():
            sys.exit(f"run benchmarks/ngswin_lowbit.py first (needs {args.lowbit}/float.onnx and calib.npz)")
        run(args, store, out_json)
    print(write_report(store, args.out))


if __name__ == "__main__":
    main()
