"""`qdeploy calibrate`: options -> CalibrateConfig -> qdeploy.pipeline.calibrate_model -> summary."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from qdeploy_cli._common import PixelRange
from qdeploy_cli._data_options import CropType, data_defaults

from qdeploy.calib import observer_names  # numpy only: cheap, and --help lists every registered method
from qdeploy.calib.images import DEFAULT_CROP, DEFAULT_NUM_SAMPLES

__all__ = ["calibrate_cmd"]

_BITS = re.compile(r"W(\d+)A(\d+)", re.IGNORECASE)


def _kv(values: tuple[str, ...]) -> dict[str, Any]:
    """Parse ``key=value`` pairs, turning numbers and booleans into Python values."""
    from qdeploy.errors import InputError

    out: dict[str, Any] = {}
    for item in values:
        if "=" not in item:
            raise InputError(f"--method-option expects key=value, got {item!r}", "e.g. --method-option num_bins=4096")
        key, raw = item.split("=", 1)
        value: Any = raw
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        out[key.strip()] = value
    return out


def _bits_options(bits: str | None, preset: str) -> dict[str, Any]:
    """``--bits W4A4`` -> ``weight_bits=4`` and the preset's activation grid with 4 bits (same symmetry)."""
    import dataclasses

    from qdeploy.errors import InputError
    from qdeploy.quant import get_preset

    if bits is None:
        return {}
    match = _BITS.fullmatch(bits.strip())
    w, a = (int(match[1]), int(match[2])) if match else (0, 0)
    if not (2 <= w <= 8 and 2 <= a <= 8):
        raise InputError(f"--bits expects WxAy with weight and activation bits in 2..8, got {bits!r}",
                         "e.g. --bits W8A8, W4A4, W3A3, W2A2 or W4A8")
    activation = get_preset(preset).activation
    return {"weight_bits": w, "activation": dataclasses.replace(activation, bits=a)}


def _refine_options(refine: str | None, iterations: int, lr: float, batch: int, device: str, seed: int,
                    quiet: bool, checkpoint: Path | None) -> dict[str, Any]:
    if refine is None:
        return {}
    return {"iterations": iterations, "lr": lr, "batch_size": batch, "device": device, "seed": seed,
            "show_progress": not quiet} | ({"checkpoint": str(checkpoint)} if checkpoint is not None else {})


def _target(sqnr: str | None, loss: str | None, data: Path | None, scale: int | None, samples: int,
            crop: int) -> Any:
    """``--target-*`` options -> a :class:`qdeploy.analyze.target.TargetConfig` (None without a target)."""
    from qdeploy.errors import InputError

    if sqnr is None and loss is None:
        if data is not None or scale is not None:  # (--holdout alone is fine: it still splits the data)
            raise InputError("--target-data / --target-scale only matter with a target",
                             "add --target-sqnr DB or --target-loss DB")
        return None
    if sqnr is not None and loss is not None:
        raise InputError("give one accuracy target", "use either --target-sqnr or --target-loss")
    from qdeploy.analyze.search import PrecisionTarget
    from qdeploy.analyze.target import TargetConfig

    target = PrecisionTarget.parse("sqnr", sqnr) if sqnr is not None else PrecisionTarget.parse("loss", loss)
    return TargetConfig(target, data, scale, samples, crop)


def _preset_options(op_types: str | None, include: tuple[str, ...], exclude: tuple[str, ...]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if op_types:
        opts["op_types"] = tuple(t.strip() for t in op_types.split(",") if t.strip())
    if include:
        opts["include_nodes"] = include
    if exclude:
        opts["exclude_nodes"] = exclude
    return opts


@click.command("calibrate")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path),
              help="Folder of images (png/jpg/bmp), a .npy, or a .npz keyed by input name.")
@click.option("--method", default="auto", show_default=True,
              help=f"Observer: {', '.join(observer_names())}. auto (the default) computes every method's bounds "
                   "at once, starts from mse, then checks the model against float on a held-out part of --data "
                   "(output SQNR >= 40 dB, or Y-PSNR loss <= 0.05 dB for SR models) and repairs it: the tensors "
                   "that carry the error switch to the range method that measures best at the output, or stay "
                   "float. Any other name forces that one method everywhere, unchecked.")
@click.option("--no-verify", is_flag=True,
              help="With --method auto: skip the held-out check and repair (mse ranges everywhere).")
@click.option("--exact-weights", is_flag=True,
              help="With --method auto on a CPU without VNNI: keep uint8 conv weights (u8u8 kernels, exactly the "
                   "calibrated grid) instead of trying pair-safe int8 ones (u8s8 kernels, faster, kept only if "
                   "the check still passes).")
@click.option("--method-option", multiple=True, metavar="KEY=VALUE",
              help="Observer config override, e.g. num_bins=4096 or percentile=99.9.")
@click.option("--preset", default="ort-cpu-int8", show_default=True,
              help="Target: ort-cpu-int8 (uint8 activations, ORT integer kernels), tensorrt-int8 (symmetric, "
                   "dedicated QDQ pairs) or lowbit-sim (inputs of MatMul/Gemm incl. attention, any --bits; "
                   "accuracy simulation).")
@click.option("--bits", default=None, metavar="WxAy",
              help="Weight and activation bits, e.g. W4A4, W3A3, W2A2, W8A8 (default: the preset's, W8A8). "
                   "Below 8 bits values are stored in 8-bit types and saturate on the low-bit grid: an "
                   "accuracy emulation, not faster kernels.")
@click.option("--shift-qk", is_flag=True,
              help="Exact shifted query/key quantization for attention: quantize q - mean(q) and k - mean(k) "
                   "(per head, calibrated) and add back the per-key term in float; attention is unchanged "
                   "before rounding.")
@click.option("--rotate", is_flag=True,
              help="Rotate every quantized Linear's input by a randomized Hadamard matrix (undone in its "
                   "weight; exact in float) so outlier channels share the grid: for low bits on models whose "
                   "Linears read an un-normalised stream. Adds one float KxK MatMul per Linear.")
@click.option("--smooth", "smooth_alpha", type=click.FloatRange(0.0, 1.0), default=None, metavar="ALPHA",
              help="Centre each Linear input channel at its calibrated mean and move ALPHA of its width into "
                   "the weights (exact in float; one extra pass over --data), then --rotate if given. For "
                   "low bits on Linears that read an un-normalised stream; 0.7 measured best on NGswin.")
@click.option("--refine", type=click.Choice(["dqc"]), default=None,
              help="After calibrating, refine the QDQ scales: dqc = distillation against the float model on "
                   "--data (L1 on the output + normalised feature losses, Adam, straight-through rounding).")
@click.option("--dqc-iterations", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--dqc-lr", type=click.FloatRange(min=0, min_open=True), default=1e-2, show_default=True)
@click.option("--dqc-batch", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--dqc-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dqc-checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save DQC's state here every 10 steps and resume from it when it exists (same model and "
                   "settings). Default: OUTPUT's name + .dqc-checkpoint.pt, deleted when the refinement finishes.")
@click.option("--target-sqnr", default=None, metavar="DB",
              help="Accuracy target: output SQNR vs the float model >= DB on held-out inputs. The model is "
                   "calibrated at --bits, then its most sensitive tensors are raised to 8 bits or left float "
                   "until the target is met; the precision map goes into the cache.")
@click.option("--target-loss", default=None, metavar="DB",
              help="Accuracy target on the task metric, e.g. 0.05dB: SR Y-PSNR loss on held-out images "
                   "(needs --target-scale S, and --target-data HR_DIR or --holdout F).")
@click.option("--target-data", type=click.Path(path_type=Path), default=None,
              help="Held-out data for the target (never the calibration set): HR images with --target-scale, "
                   "else model inputs like --data. Default: the --holdout part of --data (without a holdout, "
                   "--target-sqnr falls back to the calibration inputs and says so).")
@click.option("--target-scale", type=click.IntRange(min=1), default=None,
              help="SR scale: --target-data holds HR images; LR crops are made by MATLAB bicubic.")
@click.option("--target-samples", type=click.IntRange(min=1), default=16, show_default=True,
              help="Held-out samples each candidate precision map is measured on.")
@click.option("--target-crop", type=click.IntRange(min=8), default=48, show_default=True,
              help="LR crop size of the held-out samples.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="With a target: write the sensitivity report (report.html, report.md, plots) here.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the QDQ model.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None,
              help="Use at most N calibration samples (deterministic choice by --seed). Default for an image "
                   f"folder: {DEFAULT_NUM_SAMPLES} images; for arrays: all.")
@click.option("--crop", type=CropType(), default=None, metavar="PIXELS|none",
              help="Random square crop size per image (an image smaller than it gives a square of its smaller "
                   f"side); `none` feeds whole images. Default for a model with dynamic H/W: {DEFAULT_CROP}; "
                   "else the model's fixed size (centre crop).")
@click.option("--range", "--input-range", "value_range", type=PixelRange(as_text=True), default=None,
              metavar="0-255|0-1",
              help="Pixel value range the model expects (0,255 / 0..255 / 255 work too). Default: the range "
                   "`qdeploy export` recorded for MODEL "
                   "in its manifest.json, else 0-1.")
@click.option("--color", type=click.Choice(["rgb", "y", "gray"]), default="rgb", show_default=True,
              help="Channels fed to the model.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--holdout", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="Keep this fraction of the --data files out of calibration (by a hash of the file name, so "
                   "stable) and measure --target-sqnr/--target-loss, or auto's check, on them. Default: 0.2 "
                   "for --method auto on a folder of >= 10 images, else 0.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Calibration batch size (results do not depend on it).")
@click.option("--op-types", default=None,
              help="Comma list of op types to quantize (default: Conv,ConvTranspose,MatMul,Gemm).")
@click.option("--include", multiple=True, metavar="REGEX", help="Only quantize nodes whose name matches (repeatable).")
@click.option("--exclude", multiple=True, metavar="REGEX", help="Never quantize nodes whose name matches (repeatable).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Reuse ranges from a calibration cache JSON (no model runs).")
@click.option("--cache-out", type=click.Path(path_type=Path), default=None,
              help="Where to write the cache (default: OUTPUT with .calib.json).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads while collecting.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def calibrate_cmd(model: Path, data: Path | None, method: str, no_verify: bool, exact_weights: bool,
                  method_option: tuple[str, ...],
                  preset: str,
                  bits: str | None, shift_qk: bool, rotate: bool, smooth_alpha: float | None,
                  refine: str | None, dqc_iterations: int,
                  dqc_lr: float, dqc_batch: int, dqc_device: str, dqc_checkpoint: Path | None,
                  target_sqnr: str | None, target_loss: str | None,
                  target_data: Path | None, target_scale: int | None, target_samples: int, target_crop: int,
                  report_dir: Path | None, output: Path, num_samples: int | None, crop: int | None,
                  value_range: str | None, color: str, seed: int, holdout: float | None,
                  batch_size: int, op_types: str | None, include: tuple[str, ...], exclude: tuple[str, ...],
                  cache: Path | None, cache_out: Path | None, threads: int | None, as_json: bool) -> None:
    """Insert calibrated QuantizeLinear/DequantizeLinear nodes into MODEL (an .onnx file).

    \b
    Weights: INT8 (or --bits) per output channel, symmetric. Activations: per tensor, ranges chosen by
    --method on --data (calibrate on training images, never on the test set you report). The default,
    auto, verifies the model against float on held-out data and repairs it (see --method).
    Writes OUTPUT, OUTPUT's calibration cache (.calib.json: per tensor the observed range,
    chosen bound, fraction clipped) and a manifest.json beside it.

    \b
    Examples:
      qdeploy calibrate exports/abpn/model.onnx --data train_images/ -o exports/abpn/model.qdq.onnx
          (the defaults: --method auto, checked on a held-out fifth of the images and repaired)
      qdeploy calibrate model.onnx --data calib.npz --method mse --preset tensorrt-int8 -o model.trt.qdq.onnx
      qdeploy calibrate model.onnx --cache exports/abpn/model.qdq.calib.json -o again.qdq.onnx
      qdeploy calibrate swinir.onnx --data calib_images/ --method dobi --bits W4A4 --preset lowbit-sim \\
          --shift-qk --refine dqc --dqc-iterations 200 -o swinir.w4a4.qdq.onnx
      qdeploy calibrate abpn.onnx --data train_lr/ --range 0-255 --method mse --bits W4A4 \\
          --target-loss 0.1dB --target-data heldout_hr/ --target-scale 3 --report mixed/ -o abpn.mixed.qdq.onnx
    """
    from qdeploy_cli._common import console, print_json

    from qdeploy.calib.data import DataConfig
    from qdeploy.pipeline import CalibrateConfig, default_holdout

    data_cfg = None
    if value_range is None and data is not None:
        value_range = _pixel_range(model, quiet=as_json)
    if holdout is None:
        wants_target = target_sqnr is not None or target_loss is not None
        holdout = default_holdout(method, not no_verify and cache is None, data, wants_target)
    if data is not None:
        data_cfg = DataConfig(source=data, value_range=value_range, color=color, crop=crop or None,
                              num_samples=num_samples, seed=seed, holdout=holdout)
        data_cfg = data_defaults(model, data_cfg, crop is not None, num_samples is not None, quiet=as_json)
    config = CalibrateConfig(model=model, output=output, data=data_cfg, method=method,
                             method_options=_kv(method_option), preset=preset,
                             preset_options={**_preset_options(op_types, include, exclude),
                                             **_bits_options(bits, preset),
                                             **({"shift_qk": True} if shift_qk else {}),
                                             **({"rotate_inputs": True} if rotate else {}),
                                             **({"smooth_alpha": smooth_alpha} if smooth_alpha else {})},
                             cache=cache,
                             cache_output=cache_out, batch_size=batch_size, threads=threads, refine=refine,
                             verify=not no_verify, fast_weights=not exact_weights,
                             refine_options=_refine_options(refine, dqc_iterations, dqc_lr, dqc_batch, dqc_device,
                                                            seed, as_json, dqc_checkpoint),
                             target=_target(target_sqnr, target_loss, target_data, target_scale, target_samples,
                                            target_crop))
    if report_dir is not None and config.target is None:
        from qdeploy.errors import InputError

        raise InputError("--report writes the sensitivity report of a target search",
                         "add --target-sqnr DB or --target-loss DB, or use `qdeploy analyze --report`")
    result = _run_with_progress(config, quiet=as_json)
    if report_dir is not None:
        from qdeploy_cli.main import command_line

        from qdeploy.analyze.report import write_analysis_report

        measured = f"{data} (calibration)" + (f", {target_data} (target)" if target_data is not None else "")
        source = {"float model": str(model), "QDQ model": str(result.output), "data": measured,
                  "command": command_line()}
        write_analysis_report(result.analysis, report_dir, result.plan, 15, source)
    from qdeploy_cli._calibrate_summary import print_summary, result_dict

    if as_json:
        print_json(result_dict(result, config))
        return
    print_summary(console(), result, config)


def _pixel_range(model: Path, quiet: bool) -> str:
    """``--range`` when not given: what the export recorded (said on stderr), else 0-1."""
    from qdeploy_cli._common import console

    from qdeploy.artifacts import exported_pixel_range

    found = exported_pixel_range(model)
    if found is not None and not quiet:
        console(stderr=True).print(f"pixel range {found} (recorded by qdeploy export in "
                                   f"{model.parent / 'manifest.json'}; --range to change)")
    return found or "0-1"


def _run_with_progress(config: Any, quiet: bool) -> Any:
    from qdeploy_cli._progress import progress_reporter

    from qdeploy.pipeline import calibrate_model

    with progress_reporter("calibrating", quiet=quiet) as report:
        if config.refine is not None:  # DQC's iterations on the same display, under their own label
            import dataclasses

            options = {**config.refine_options, "progress": report.stage(config.refine.upper(), "iterations")}
            config = dataclasses.replace(config, refine_options=options)
        return calibrate_model(config, report)
