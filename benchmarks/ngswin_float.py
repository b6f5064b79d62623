"""Does our NGswin reproduce the paper in float? ``qdeploy export`` + ``qdeploy eval sr`` on whole images.

NGswin (Choi, Lee, Yang, CVPR 2023) with the authors' released weights (``../shared/weights/ngswin``, read in
place), exported with ``qdeploy export ngswin-x{S} --dynamic-hw`` and scored with ``qdeploy eval sr`` (Y-PSNR /
SSIM of BT.601 Y, shave = scale, output clamped and rounded to uint8, HR modcropped: the protocol of the
authors' ``dp_engine_test.py``, which pads the LR image symmetrically to a multiple of 32 as our model does
inside). Optionally the PyTorch module is scored the same way (``--pytorch``), a cross-check of the export.

Each (set, scale) is stored in the JSON as soon as it is measured and skipped on the next run (``--redo`` to
measure again): whole-image transformer inference on a shared 2-core CPU is slow, so runs can be split.

    python benchmarks/ngswin_float.py --threads 2
    python benchmarks/ngswin_float.py --sets Set5:2 --redo Set5:2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SETS = ("Set5:2", "Set5:3", "Set14:2", "B100:2", "Urban100:2")
PAPER = {  # NGswin rows of the paper's lightweight-SR table: (Y-PSNR dB, SSIM)
    ("Set5", 2): (38.05, 0.9610), ("Set14", 2): (33.79, 0.9199), ("B100", 2): (32.27, 0.9008),
    ("Urban100", 2): (32.53, 0.9324), ("Set5", 3): (34.52, 0.9282), ("Set14", 3): (30.53, 0.8456),
    ("B100", 3): (29.19, 0.8078), ("Urban100", 3): (28.52, 0.8603),
}
PAPER_SOURCE = ("Choi et al., CVPR 2023 (arXiv 2211.11436), NGswin rows of the x2/x3 lightweight-SR table; the "
                "authors' README shows that table only as an image, so the numbers were read from its copy in "
                "vpsg-research/DyRSRNet README.md (NGswin rows, x2 and x3), which matches the brief's values")
PAPER_IMAGES = {"Set5": 5, "Set14": 14, "B100": 100, "Urban100": 100}


def qdeploy(*args: str) -> list[str]:
    """The ``qdeploy`` console script of this interpreter's environment."""
    return [str(Path(sys.executable).with_name("qdeploy")), *args]


def pretty(cmd: list[str]) -> str:
    """The command as a user types it from the repository root (``qdeploy``, relative paths)."""
    text = shlex.join(["qdeploy", *cmd[1:]] if cmd and cmd[0].endswith("qdeploy") else cmd)
    return text.replace(f"{REPO}/", "").replace(f"{REPO.parent}/", "../")


def run_json(cmd: list[str], threads: int) -> tuple[dict[str, Any], float]:
    """Run a qdeploy command with ``--json``; its parsed stdout and wall seconds (stderr shown on failure)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {pretty(cmd)}")
    return json.loads(proc.stdout), seconds


def load_store(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"exports": {}, "rows": {}, "pytorch": {}}


def save_store(store: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(store, indent=1) + "\n")
    tmp.replace(path)


def ensure_export(scale: int, args: argparse.Namespace, store: dict[str, Any]) -> Path:
    """``work/ngswin-x{S}/model.onnx``, exported once (the record keeps the command and parity)."""
    onnx = args.work / f"ngswin-x{scale}" / "model.onnx"
    key = f"x{scale}"
    if onnx.is_file() and key in store["exports"]:
        return onnx
    cmd = qdeploy("export", f"ngswin-x{scale}", "--dynamic-hw", "--json", "-o", str(onnx))
    if args.weights_dir is not None:
        cmd += ["--weights", str(args.weights_dir / f"NGswin_x{scale}.pth")]
    print(f"exporting: {pretty(cmd)}", flush=True)
    out, seconds = run_json(cmd, args.threads)
    store["exports"][key] = {"command": pretty(cmd), "seconds": round(seconds, 1), "exporter": out["exporter"],
                             "simplified": out["simplified"], "parity": out["parity"], "bytes": out["bytes"]}
    return onnx


def eval_row(name: str, scale: int, onnx: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``qdeploy eval sr`` on one set: mean and per-image scores, bicubic, time per image."""
    cmd = qdeploy("eval", "sr", str(onnx), "--dataset", str(args.data / name), "--scale", str(scale),
                  "--range", "0-1", "--threads", str(args.threads), "--json")
    print(f"evaluating: {pretty(cmd)}", flush=True)
    report, seconds = run_json(cmd, args.threads)
    model = report["models"][0]
    return {"command": pretty(cmd), "images": report["n_images"], "psnr_y": model["psnr_y"],
            "ssim_y": model["ssim_y"], "bicubic_psnr_y": report["bicubic"]["psnr_y"],
            "ms_per_image": model["ms_per_image"], "wall_s": round(seconds, 1),
            "lr_sources": report["lr_sources"], "per_image": model["images"]}


def pytorch_row(name: str, scale: int, args: argparse.Namespace) -> dict[str, Any]:
    """The PyTorch module scored with the same functions (no ONNX): a cross-check of the export."""
    import torch
    from qdeploy_models.zoo import build_module

    from qdeploy.sr.dataset import load_sr_dataset
    from qdeploy.sr.evaluate import score_image, to_uint8

    torch.set_num_threads(args.threads)
    weights = None if args.weights_dir is None else args.weights_dir / f"NGswin_x{scale}.pth"
    model = build_module(f"ngswin-x{scale}", weights)
    scores, start = [], time.perf_counter()
    for pair in load_sr_dataset(args.data / name, scale):
        x = torch.from_numpy(pair.lr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
        with torch.no_grad():
            out = model(x)[0].numpy()
        scores.append(score_image(pair.name, to_uint8(out, 1), pair.hr, scale))
    seconds = time.perf_counter() - start
    return {"psnr_y": float(np.mean([s.psnr_y for s in scores])), "ssim_y": float(np.mean([s.ssim_y for s in scores])),
            "ms_per_image": 1000.0 * seconds / len(scores), "images": len(scores)}


def table_row(key: str, row: dict[str, Any], torch_row: dict[str, Any] | None) -> str:
    name, scale = key.split(":")[0], int(key.split(":")[1])
    psnr, ssim = PAPER.get((name, scale), (float("nan"), float("nan")))
    images = str(row["images"]) + (f" of {PAPER_IMAGES[name]}" if row["images"] != PAPER_IMAGES.get(name) else "")
    torch_cell = f"{torch_row['psnr_y']:.3f}" if torch_row else "-"
    return (f"| {name} | x{scale} | {images} | {row['psnr_y']:.3f} | {psnr:.2f} | {row['psnr_y'] - psnr:+.3f} | "
            f"{row['ssim_y']:.4f} | {ssim:.4f} | {torch_cell} | {row['bicubic_psnr_y']:.2f} | "
            f"{row['ms_per_image']:.0f} |")


def table_lines(store: dict[str, Any]) -> list[str]:
    return ["| set | scale | images | ours Y-PSNR (ONNX) | paper | Δ | ours SSIM | paper SSIM | PyTorch Y-PSNR "
            "| bicubic | ms / image (ORT CPU) |", "|---|---|---|---|---|---|---|---|---|---|---|",
            *(table_row(key, row, store["pytorch"].get(key)) for key, row in store["rows"].items())]


def write_report(store: dict[str, Any], out: Path, threads: int) -> str:
    exports = [f"    {pretty(shlex.split(e['command']))}    # {e['seconds']:.0f} s, {e['exporter']}, parity SQNR "
               f"{float(e['parity']['worst_sqnr_db']):.1f} dB" for e in store["exports"].values()]
    evals = [f"    {pretty(shlex.split(row['command']))}" for row in store["rows"].values()]
    text = "\n".join([
        "# NGswin float reproduction (authors' weights, ONNX Runtime CPU)", "",
        "Regenerate (resumable; sets already in the JSON are skipped): "
        f"`python benchmarks/ngswin_float.py --threads {threads}`", "",
        *table_lines(store), "",
        f"Paper: {PAPER_SOURCE}. Δ = ours minus paper (dB).", "",
        "Protocol (the same as the authors' `dp_engine_test.py`): whole LR images at batch 1, padded inside the "
        "model to a multiple of 32 with symmetric padding and cropped back; output clamped to [0, 1], scaled and "
        "rounded to uint8; HR modcropped; PSNR/SSIM on BT.601 Y (16 + 65.481 R + 128.553 G + 24.966 B on [0, 1], "
        "float, not rounded), shaving `scale` pixels per border; SSIM 11x11 Gaussian, sigma 1.5. LR inputs: the "
        "MATLAB-bicubic files of the benchmark pack for Set5/Set14, qdeploy's bit-exact MATLAB `imresize` port "
        "for B100/Urban100 (which ship HR only).", "",
        "Data caveats: Urban100 here is the first 50 of the 100 images (img_001..img_050), so its row is not "
        "the paper's set and its Δ is indicative only. B100 is the 480x320 crop of the 481x321 originals, which "
        "for x2 is exactly the usual modcrop.", "",
        "'PyTorch' = the module itself scored with the same functions (no ONNX). ms / image = ONNX Runtime CPU, "
        f"{threads} threads, shared 2-core machine (other jobs running), mean over the set's images.", "",
        "Commands:", "", *exports, *evals, ""])
    out.with_suffix(".md").write_text(text)
    return "\n".join(table_lines(store))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS), help="comma list of SET:SCALE, run in this order")
    ap.add_argument("--redo", default="", help="comma list of SET:SCALE to measure again")
    ap.add_argument("--pytorch", default="Set5:2,Set5:3", help="SET:SCALE also scored in PyTorch ('' for none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "sr")
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="folder with NGswin_x{2,3}.pth [default: the zoo's ../shared/weights/ngswin]")
    ap.add_argument("--work", type=Path, default=REPO / "exports" / "ngswin")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ngswin_float")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    json_path = args.out.with_suffix(".json")
    store = load_store(json_path)
    redo = {s for s in args.redo.split(",") if s}
    for key in (s for s in args.sets.split(",") if s):
        name, scale = key.split(":")[0], int(key.split(":")[1])
        if key not in store["rows"] or key in redo:
            store["rows"][key] = eval_row(name, scale, ensure_export(scale, args, store), args)
            save_store(store, json_path)
        if key in args.pytorch.split(",") and (key not in store["pytorch"] or key in redo):
            print(f"PyTorch: {key}", flush=True)
            store["pytorch"][key] = pytorch_row(name, scale, args)
            save_store(store, json_path)
    print(write_report(store, args.out, args.threads))


if __name__ == "__main__":
    main()
