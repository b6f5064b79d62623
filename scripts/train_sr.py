"""Train a zoo SR model on T91 + BSD200 (the classic 291-image set), resumably, on one CPU thread.

Recipe: L1 loss, Adam (cosine schedule to 1% of the start rate), flips and 90-degree rotations, LR made by
the MATLAB-bicubic port from modcropped HR, plus down-scaled copies of each HR image (x1, 0.8, 0.6) for
more variety. Ten BSD200 images are held out for monitoring; no test set is looked at during training
and the last checkpoint is the one kept (never picked on a test set). Pixels are fed in the range the
zoo entry declares ([0, 255] for ABPN and esa-x4, [0, 1] otherwise); losses and PSNR are on the 0-255
scale. One-channel models (fsrcnn-y-x2) train on BT.601 luma: Y of the bicubic LR RGB image (unrounded,
in [16, 235]) to Y of the HR image, which is what Y-channel SR evaluation feeds and scores.

Every ``--eval-every`` iterations the weights go to ``--out`` and a full training state (model,
optimizer, schedule, both random generators, the log) to ``--ckpt``; ``--resume`` continues from it
bit-for-bit, so a run killed by a session restart loses at most one interval.

    python scripts/train_sr.py --model abpn-x3 --iters 15000 --batch 16 --patch 64 --lr 1e-3
    python scripts/train_sr.py --model swinir-light-x2 --iters 2500 --batch 8 --patch 32 --lr 5e-4 --eval-every 250
    python scripts/train_sr.py --model imdn-x2 --iters 1500 --batch 8 --patch 32 --lr 1e-3 --resume
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from qdeploy_models.zoo import get_entry

from qdeploy.sr.imresize import bicubic_downscale, imresize
from qdeploy.sr.metrics import psnr_y, y_channel

SR_MODELS = ("abpn-x3", "swinir-light-x2", "imdn-x2", "pan-x3", "esa-x4", "fsrcnn-y-x2")
RESCALES = (1.0, 0.8, 0.6)
HELD_OUT = 10
"""How many (sorted) BSD200 images are kept out of training for the validation PSNR."""
SOURCE_NOTE = "trained by qdeploy, not a public checkpoint"

Pair = tuple[np.ndarray, np.ndarray]
"""(LR, HR) as HxWxC arrays on the 0-255 scale: uint8 RGB, or float32 Y (C=1) for luma models."""


@dataclass(frozen=True)
class Task:
    """What the zoo entry implies for training: SR factor, input gain and colour mode."""

    scale: int
    gain: float  # model pixels = 0-255 pixels / gain
    luma: bool  # one-channel model fed BT.601 Y


def task_for(model: str) -> Task:
    """Read scale (the name's ``xN``), gain and luma (one input channel) off the zoo entry, so a new zoo
    SR model trains without script changes."""
    entry = get_entry(model)
    return Task(scale=int(model.rsplit("x", 1)[1]), gain=255.0 / entry.input_range[1],
                luma=entry.default_input_shape[1] == 1)


def make_pair(hr: np.ndarray, task: Task) -> Pair:
    """Modcrop ``hr`` (uint8 RGB), make its bicubic LR, and convert both to Y when the model is luma."""
    hr = hr[: hr.shape[0] // task.scale * task.scale, : hr.shape[1] // task.scale * task.scale]
    lr = bicubic_downscale(hr, task.scale)
    if task.luma:
        return y_channel(lr).astype(np.float32)[..., None], y_channel(hr).astype(np.float32)[..., None]
    return lr, hr


def load_pairs(root: Path, task: Task, exclude: set[str], min_lr: int = 64) -> list[Pair]:
    """Training pairs from ``root/*/*.png`` at each of RESCALES (images with a short LR side < min_lr
    are skipped)."""
    pairs = []
    for path in sorted(root.glob("*/*.png")):
        if path.stem in exclude:
            continue
        hr = np.array(Image.open(path).convert("RGB"))
        for r in RESCALES:
            img = hr if r == 1.0 else imresize(hr, r)
            if min(img.shape[:2]) >= min_lr * task.scale:
                pairs.append(make_pair(img, task))
    return pairs


def sample_batch(pairs: list[Pair], rng: np.random.Generator, batch: int, patch: int,
                 scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random aligned LR/HR patches with a random rotation and flip (NCHW float, 0-255)."""
    lrs, hrs = [], []
    for _ in range(batch):
        lr, hr = pairs[rng.integers(len(pairs))]
        y = rng.integers(lr.shape[0] - patch + 1)
        x = rng.integers(lr.shape[1] - patch + 1)
        lp = lr[y : y + patch, x : x + patch]
        hp = hr[y * scale : (y + patch) * scale, x * scale : (x + patch) * scale]
        k = rng.integers(4)
        lp, hp = np.rot90(lp, k), np.rot90(hp, k)
        if rng.integers(2):
            lp, hp = lp[:, ::-1], hp[:, ::-1]
        lrs.append(lp.transpose(2, 0, 1))
        hrs.append(hp.transpose(2, 0, 1))
    to = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a))).float()
    return to(lrs), to(hrs)


def _luma_psnr(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Y-PSNR of a float Y output (rounded like a saved image) against the unrounded HR Y."""
    d = (np.clip(np.round(sr), 0, 255) - hr.astype(np.float64))[shave:-shave, shave:-shave]
    return float(10 * np.log10(255.0**2 / np.mean(d * d)))


@torch.no_grad()
def validate(model: torch.nn.Module, pairs: list[Pair], task: Task) -> float:
    """Mean Y-PSNR (shave = scale) of whole held-out images, outputs rounded as a viewer would see them."""
    vals = []
    for lr, hr in pairs:
        x = torch.from_numpy(lr.transpose(2, 0, 1).astype(np.float32))[None] / task.gain
        sr = (model(x)[0] * task.gain).permute(1, 2, 0).numpy()
        if task.luma:
            vals.append(_luma_psnr(sr[..., 0], hr[..., 0], task.scale))
        else:
            vals.append(psnr_y(np.clip(np.round(sr), 0, 255).astype(np.uint8), hr, task.scale))
    return float(np.mean(vals))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line (``argv`` for tests); fills in the default weights and checkpoint paths."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="abpn-x3", choices=SR_MODELS)
    ap.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tuning)")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sr/train"))
    ap.add_argument("--iters", type=int, default=15000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64, help="LR patch side (HR = patch * scale)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: models/weights/<zoo weights file>")
    ap.add_argument("--ckpt", type=Path, default=None, help="training state; default logs/<model>.ckpt")
    ap.add_argument("--resume", action="store_true", help="continue from --ckpt when it exists")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="save the state and exit after this iteration (time-boxing on a shared machine)")
    args = ap.parse_args(argv)
    args.out = args.out or Path("models/weights") / str(get_entry(args.model).weights)
    args.ckpt = args.ckpt or Path("logs") / f"{args.model}.ckpt"
    return args


def load_data(args: argparse.Namespace, task: Task) -> tuple[list[Pair], list[Pair], list[str]]:
    """(training pairs, held-out whole-image pairs, held-out names)."""
    held = sorted((args.data / "BSD200").glob("*.png"))[:HELD_OUT]
    names = [p.stem for p in held]
    train = load_pairs(args.data, task, set(names))
    val = [make_pair(np.array(Image.open(p).convert("RGB")), task) for p in held]
    return train, val, names


def save_state(args: argparse.Namespace, state: dict[str, Any], model: torch.nn.Module) -> None:
    """Write the weights (``--out``) and the full training state (``--ckpt``), each atomically."""
    for path, obj in ((args.out, model.state_dict()), (args.ckpt, state)):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(obj, tmp)
        tmp.replace(path)


def restore(args: argparse.Namespace, model: torch.nn.Module, opt: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator) -> dict[str, Any]:
    """Load ``--ckpt`` into the objects (when resuming and it exists); returns its iteration/log/minutes."""
    if not (args.resume and args.ckpt.is_file()):
        return {"iter": 0, "log": [], "minutes": 0.0}
    state = torch.load(args.ckpt, map_location="cpu", weights_only=False)  # our own file
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    rng.bit_generator.state = state["np_rng"]
    torch.set_rng_state(state["torch_rng"])
    print(f"resumed from {args.ckpt} at iteration {state['iter']}", flush=True)
    return state


def write_record(args: argparse.Namespace, model: torch.nn.Module, log: list[dict[str, float]],
                 held: list[str], minutes: float) -> None:
    """The JSON beside the weights: recipe, command, log (results on test sets are added by hand)."""
    record = {"model": args.model, "source": SOURCE_NOTE,
              "parameters": sum(p.numel() for p in model.parameters()),
              "command": "python scripts/train_sr.py " + " ".join(sys.argv[1:]),
              "recipe": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
              | {"loss": "L1 on the 0-255 scale", "optimizer": "Adam, cosine to 1% of lr",
                 "augment": "flips + 90-degree rotations", "rescales": list(RESCALES)},
              "iterations": log[-1]["iter"] if log else 0, "log": log, "held_out": held,
              "held_out_validation": f"Y-PSNR on {HELD_OUT} held-out BSD200 training images (never a test set)",
              "train_minutes": minutes}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


def train(args: argparse.Namespace) -> None:
    """The training loop: L1 on 0-255 pixels, cosine Adam, checkpoint and held-out PSNR every interval."""
    task = task_for(args.model)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    train_pairs, val, held = load_data(args, task)
    print(f"{len(train_pairs)} training pairs, {len(val)} held-out, loaded in {time.time() - t0:.0f}s", flush=True)
    model = get_entry(args.model).builder().train()  # seeded above; shipped weights are not loaded unless --init
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i, args.iters) / args.iters)))
    state = restore(args, model, opt, sched, rng)
    log, t1 = state["log"], time.time() - 60 * state["minutes"]
    for it in range(state["iter"] + 1, args.iters + 1):
        x, y = sample_batch(train_pairs, rng, args.batch, args.patch, task.scale)
        loss = (model(x / task.gain) * task.gain - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % args.eval_every == 0 or it in (args.iters, args.stop_after):
            model.eval()
            rec = {"iter": it, "loss": float(loss.detach()), "val_y_psnr": validate(model, val, task),
                   "minutes": (time.time() - t1) / 60}
            model.train()
            log.append(rec)
            print(json.dumps(rec), flush=True)
            save_state(args, {"iter": it, "model": model.state_dict(), "opt": opt.state_dict(),
                              "sched": sched.state_dict(), "np_rng": rng.bit_generator.state,
                              "torch_rng": torch.get_rng_state(), "log": log, "minutes": rec["minutes"]}, model)
        if it == args.stop_after:
            print(f"stopped after iteration {it}; continue with --resume", flush=True)
            return
    write_record(args, model, log, held, (time.time() - t1) / 60)


if __name__ == "__main__":
    train(parse_args())
