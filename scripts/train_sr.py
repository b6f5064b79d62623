"""Train a zoo SR model (ABPN x3, SwinIR-light x2) on T91 + BSD200 (the classic 291-image set).

Recipe: L1 loss, Adam (cosine schedule to 1% of the start rate), flips and 90-degree rotations, LR made by
the MATLAB-bicubic port from modcropped HR, plus down-scaled copies of each HR image (x1, 0.8, 0.6) for
more variety. Ten BSD200 images are held out for monitoring; no test set is looked at during training
and the last checkpoint is the one kept (never picked on a test set). Pixels are fed in the range the
zoo entry declares ([0, 255] for ABPN, [0, 1] for SwinIR); losses and PSNR are on the 0-255 scale.

    python scripts/train_sr.py --model abpn-x3 --iters 15000 --batch 16 --patch 64 --lr 1e-3
    python scripts/train_sr.py --model swinir-light-x2 --iters 2500 --batch 8 --patch 32 --lr 5e-4 --eval-every 250
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from qdeploy_models.zoo import get_entry

from qdeploy.sr.imresize import bicubic_downscale, imresize


def load_pairs(root: Path, scale: int, rescales: tuple[float, ...], exclude: set[str]) -> list:
    pairs = []
    for path in sorted(root.glob("*/*.png")):
        if path.stem in exclude:
            continue
        hr = np.array(Image.open(path).convert("RGB"))
        for r in rescales:
            img = hr if r == 1.0 else imresize(hr, r)
            if min(img.shape[:2]) < 64 * scale:
                continue
            img = img[: img.shape[0] // scale * scale, : img.shape[1] // scale * scale]
            pairs.append((bicubic_downscale(img, scale), img))
    return pairs


def sample_batch(pairs, rng, batch, patch, scale):
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


def y_psnr(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    w = np.array([65.481, 128.553, 24.966]) / 255.0
    ys = sr.astype(np.float64) @ w + 16.0
    yh = hr.astype(np.float64) @ w + 16.0
    d = (ys - yh)[shave:-shave, shave:-shave]
    return float(10 * np.log10(255.0**2 / np.mean(d * d)))


@torch.no_grad()
def validate(model, pairs, scale, gain):
    vals = []
    for lr, hr in pairs:
        x = torch.from_numpy(lr.transpose(2, 0, 1).copy()).float()[None] / gain
        sr = model(x)[0] * gain
        sr = sr.permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)
        vals.append(y_psnr(sr, hr, scale))
    return float(np.mean(vals))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="abpn-x3", choices=["abpn-x3", "swinir-light-x2"])
    ap.add_argument("--init", type=Path, default=None, help="start from these weights (fine-tuning)")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sr/train"))
    ap.add_argument("--iters", type=int, default=15000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: models/weights/<zoo weights file>")
    args = ap.parse_args()
    entry = get_entry(args.model)
    scale = int(args.model.rsplit("x", 1)[1])
    gain = 255.0 / entry.input_range[1]
    args.out = args.out or Path("models/weights") / str(entry.weights)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    held = sorted((args.data / "BSD200").glob("*.png"))[:10]
    held_names = {p.stem for p in held}
    train = load_pairs(args.data, scale, (1.0, 0.8, 0.6), held_names)
    val = [bicubic_downscale(np.array(Image.open(p).convert("RGB")), scale) for p in held]
    val = [(lr, np.array(Image.open(p).convert("RGB"))[: lr.shape[0] * scale, : lr.shape[1] * scale])
           for lr, p in zip(val, held)]
    print(f"{len(train)} training pairs, {len(val)} held-out, loaded in {time.time() - t0:.0f}s", flush=True)
    model = entry.builder().train()  # seeded above; shipped weights are not loaded unless --init
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i, args.iters) / args.iters)))
    log = []
    t1 = time.time()
    for it in range(1, args.iters + 1):
        x, y = sample_batch(train, rng, args.batch, args.patch, scale)
        loss = (model(x / gain) * gain - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % args.eval_every == 0 or it == args.iters:
            model.eval()
            v = validate(model, val, scale, gain)
            model.train()
            rec = {"iter": it, "loss": float(loss.detach()), "val_y_psnr": v, "minutes": (time.time() - t1) / 60}
            log.append(rec)
            print(json.dumps(rec), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(args.out)
    meta = {"recipe": vars(args) | {"data": str(args.data), "out": str(args.out), "init": str(args.init)},
            "log": log, "threads": args.threads,
            "held_out": sorted(held_names), "train_minutes": (time.time() - t1) / 60}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
