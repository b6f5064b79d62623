"""Train the zoo's ``tinycls`` classifier, and score ONNX versions of it, on a real offline task.

Task: which of 10 BSD200 photos a 32x32 RGB crop came from (10 classes). The images are the 10 BSD200
files after the 10 that the SR scripts hold out (sorted names). Training crops come from the left 75%
of each photo, validation crops from a fixed 16-pixel grid over the right 25%, so validation accuracy
measures generalisation to unseen parts of each scene, not memorised pixels. Recipe: Adam, cosine
schedule to 1% of the start rate, cross-entropy, flips and 90-degree rotations, one CPU thread.

    python scripts/train_cls.py --iters 1500 --batch 64 --lr 2e-3
    python scripts/train_cls.py --eval-onnx exports/tinycls/model.onnx exports/tinycls/model.qdq.onnx
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from qdeploy_models.zoo import build_module, get_entry

CLASSES = 10
FIRST_IMAGE = 10
"""Index (in sorted BSD200) of the first photo used: the SR scripts hold out the first 10."""
CROP = 32
TRAIN_FRACTION = 0.75
VAL_STRIDE = 16
SOURCE_NOTE = "trained by qdeploy, not a public checkpoint"


def load_images(root: Path) -> tuple[list[np.ndarray], list[str]]:
    """The 10 photos as float32 HxWx3 in [0, 1], and their file names."""
    paths = sorted((root / "BSD200").glob("*.png"))[FIRST_IMAGE : FIRST_IMAGE + CLASSES]
    return [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0 for p in paths], [p.name for p in paths]


def _split(img: np.ndarray) -> int:
    """First column of the validation part: crops left of it train, crops right of it validate."""
    return int(img.shape[1] * TRAIN_FRACTION)


def sample_batch(images: list[np.ndarray], rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random augmented crops from the training (left) part of random photos, with their labels."""
    xs, ys = [], []
    for _ in range(batch):
        label = int(rng.integers(len(images)))
        img = images[label]
        y = rng.integers(img.shape[0] - CROP + 1)
        x = rng.integers(_split(img) - CROP + 1)
        crop = np.rot90(img[y : y + CROP, x : x + CROP], int(rng.integers(4)))
        if rng.integers(2):
            crop = crop[:, ::-1]
        xs.append(crop.transpose(2, 0, 1))
        ys.append(label)
    return torch.from_numpy(np.ascontiguousarray(np.stack(xs))), torch.tensor(ys)


def val_set(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All grid crops (stride VAL_STRIDE) of the right (held-out) part of each photo: NCHW and labels."""
    xs, ys = [], []
    for label, img in enumerate(images):
        for y in range(0, img.shape[0] - CROP + 1, VAL_STRIDE):
            for x in range(_split(img), img.shape[1] - CROP + 1, VAL_STRIDE):
                xs.append(img[y : y + CROP, x : x + CROP].transpose(2, 0, 1))
                ys.append(label)
    return np.ascontiguousarray(np.stack(xs)), np.array(ys)


@torch.no_grad()
def accuracy(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray) -> float:
    """Top-1 accuracy of a PyTorch model (eval mode expected), in chunks of 256 crops."""
    preds = torch.cat([model(torch.from_numpy(xs[i : i + 256])).argmax(1) for i in range(0, len(xs), 256)])
    return float((preds.numpy() == ys).mean())


def onnx_accuracy(path: Path, xs: np.ndarray, ys: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX model (1 ORT thread, batch 1 so fixed-batch exports work too)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = [int(sess.run(None, {name: xs[i : i + 1]})[0].argmax()) for i in range(len(xs))]
    return float((np.array(preds) == ys).mean())


def train(args: argparse.Namespace) -> None:
    """Cross-entropy training; weights saved atomically at every evaluation, the record at the end."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    images, names = load_images(args.data)
    xv, yv = val_set(images)
    model = get_entry("tinycls").builder().train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(i, args.iters) / args.iters)))
    log, t0 = [], time.time()
    for it in range(1, args.iters + 1):
        x, y = sample_batch(images, rng, args.batch)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % args.eval_every == 0 or it == args.iters:
            model.eval()
            rec = {"iter": it, "loss": float(loss.detach()), "val_top1": accuracy(model, xv, yv),
                   "minutes": (time.time() - t0) / 60}
            model.train()
            log.append(rec)
            print(json.dumps(rec), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.out.with_suffix(".tmp"))
            args.out.with_suffix(".tmp").replace(args.out)
    write_record(args, model, log, names, len(yv))


def write_record(args: argparse.Namespace, model: torch.nn.Module, log: list[dict[str, float]],
                 names: list[str], n_val: int) -> None:
    """The JSON beside the weights: task, images, regions, recipe, log (quantized results added by hand)."""
    record = {"model": "tinycls", "source": SOURCE_NOTE, "parameters": sum(p.numel() for p in model.parameters()),
              "task": f"which of {CLASSES} BSD200 photos a {CROP}x{CROP} crop came from",
              "images": names, "train_region": f"left {TRAIN_FRACTION:.0%} of each photo, random crops",
              "val_region": f"right {1 - TRAIN_FRACTION:.0%}, all crops on a {VAL_STRIDE}-pixel grid ({n_val})",
              "command": "python scripts/train_cls.py " + " ".join(sys.argv[1:]),
              "recipe": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                         if k != "eval_onnx"},
              "iterations": log[-1]["iter"], "log": log, "float_val_top1": log[-1]["val_top1"]}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


def evaluate(args: argparse.Namespace) -> None:
    """Val top-1 of the shipped PyTorch model and of each ONNX file given."""
    torch.set_num_threads(1)
    xv, yv = val_set(load_images(args.data)[0])
    print(json.dumps({"pytorch": accuracy(build_module("tinycls"), xv, yv)}))
    for path in args.eval_onnx:
        print(json.dumps({str(path): onnx_accuracy(path, xv, yv)}), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Train, or with ``--eval-onnx`` score exported models on the validation crops."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/sr/train"))
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("models/weights/tinycls.pt"))
    ap.add_argument("--eval-onnx", type=Path, nargs="+", default=None, help="score these ONNX files and exit")
    args = ap.parse_args(argv)
    if args.eval_onnx:
        evaluate(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
