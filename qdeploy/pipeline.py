"""``calibrate_model``: float ONNX + calibration data -> calibrated QDQ ONNX, cache and summary.

The steps are plain calls into the pieces that own them (graph IO, quant presets, observers, the
collector, the cache), so the CLI and Python users run the very same code.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir

from qdeploy.artifacts import file_sha256, write_manifest
from qdeploy.errors import InputError
from qdeploy.graph.io import load_model, save_model
from qdeploy.pipeline_report import fusion_summary, integer_kernel_summary
from qdeploy.pipeline_steps import check_refinable, input_specs, qk_means, run_refinement, smoothed
from qdeploy.types import TensorRange

__all__ = ["CalibrateConfig", "CalibrateResult", "calibrate_model", "fusion_summary", "integer_kernel_summary"]


@dataclass(frozen=True)
class CalibrateConfig:
    """Everything ``qdeploy calibrate`` needs; built by the CLI from its options.

    ``data`` is a :class:`qdeploy.calib.data.DataConfig` (None only when ``cache`` is given).
    ``method_options`` override fields of the observer's config (e.g. ``{"num_bins": 4096}``);
    ``preset_options`` override fields of the preset's :class:`QuantConfig` (op types, include/exclude).
    ``refine`` names a refinement of the quantized model's parameters (``qdeploy.refine.REFINERS``, e.g.
    "dqc") run on the calibration data after quantizing; ``refine_options`` are its config fields
    (for DQC: iterations, lr, batch_size, feature_weight, seed, device, ...; ``show_progress``, and
    ``progress``, a ``(done, total)`` callback for the iterations).
    ``target`` (a :class:`qdeploy.analyze.target.TargetConfig`) repairs the quantized model to an accuracy
    target by raising (or leaving float) its most sensitive tensors; the map lands in the cache.
    ``verify`` (with ``method="auto"``, the default, and no target): check the model against ``quality``
    (a :class:`qdeploy.analyze.verify.QualityBar`) on held-out data and repair it until it meets the bar.
    ``fast_weights`` (with ``verify``): also try the faster kernel form of the checked model
    (:mod:`qdeploy.quant.kernel_forms`; ORT CPU without VNNI) and keep it only if it still meets the bar.
    """

    model: Path
    output: Path
    data: Any = None
    method: str = "auto"
    method_options: dict[str, Any] = field(default_factory=dict)
    preset: str = "ort-cpu-int8"
    preset_options: dict[str, Any] = field(default_factory=dict)
    cache: Path | None = None
    cache_output: Path | None = None
    batch_size: int = 1
    threads: int | None = None
    refine: str | None = None
    refine_options: dict[str, Any] = field(default_factory=dict)
    target: Any = None
    verify: bool = True
    quality: Any = None
    fast_weights: bool = True

    def __post_init__(self) -> None:
        if self.data is None and self.cache is None:
            raise InputError("no calibration data given",
                             "pass --data DIR_OR_NPZ, or --cache CALIB.json to reuse ranges")
        if Path(self.output).resolve() == Path(self.model).resolve():
            raise InputError("the output would overwrite the input model", "choose another -o path")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.refine is not None and self.data is None:
            raise InputError(f"--refine {self.refine} needs calibration data (it distils on it)",
                             "pass --data DIR_OR_NPZ as well as (or instead of) --cache")
        if self.target is not None and self.data is None:
            raise InputError("an accuracy target needs calibration data (8-bit bounds for raised tensors)",
                             "pass --data DIR_OR_NPZ as well as --cache")

    @property
    def cache_path(self) -> Path:
        """Where the calibration cache is written (default: ``<output stem>.calib.json`` beside the output)."""
        return self.cache_output or self.output.with_name(self.output.name.removesuffix(".onnx") + ".calib.json")


@dataclass(frozen=True)
class CalibrateResult:
    """What calibration produced: paths, ranges, structural summary and timings.

    ``method`` is the observer that chose ``ranges`` (the cache's method when ranges were reused).
    """

    output: Path
    cache: Path
    ranges: dict[str, TensorRange]
    summary: dict[str, Any]
    kernels: dict[str, Any]
    seconds: float
    reused_cache: bool
    method: str = ""
    fusion: dict[str, Any] = field(default_factory=dict)
    refine: dict[str, Any] = field(default_factory=dict)
    plan: Any = None
    analysis: Any = None
    verified: Any = None


def _collect(model: ir.Model, names: list[str], config: CalibrateConfig, quant: Any,
             progress: Callable[[int, int], None] | None) -> tuple[dict[str, TensorRange], dict[str, Any]]:
    from qdeploy.calib import make_observer
    from qdeploy.calib.collect import CollectConfig, collect_ranges
    from qdeploy.calib.data import count_samples, data_fingerprint, iter_samples

    specs = input_specs(model)
    total = count_samples(config.data, specs)
    observer = make_observer(config.method, **config.method_options)  # validates options early
    passes = observer.passes

    def on_batch(seen: int) -> None:
        if progress:
            progress(seen, total * passes)

    def make_data():
        return iter_samples(config.data, specs)

    ranges = collect_ranges(model, names, make_data, lambda: make_observer(config.method, **config.method_options),
                            quant.activation, CollectConfig(config.batch_size, config.threads), on_batch)
    data_info = {"source": str(config.data.source), "count": total, "sha256": data_fingerprint(config.data, specs)}
    return ranges, {"observer_config": observer.config.to_dict(), "data": data_info}


def _check_cached(cache: Any, config: CalibrateConfig, model_sha: str, names: list[str], quant: Any) -> Any:
    """``cache`` (read from ``config.cache``) if it covers ``names`` on the preset's activation grid.

    Why the grid check: observers choose bounds *for* a grid (a symmetric int8 bound is not the best
    asymmetric uint8 one), so ranges from another preset's grid would be silently suboptimal.
    """
    missing = [n for n in names if n not in cache.ranges]
    if missing:
        raise InputError(
            f"--cache {config.cache} has no range for {len(missing)} tensor(s) this model needs, e.g. {missing[0]!r}",
            "the cache was made for another model or preset; recalibrate with --data",
        )
    if cache.target != quant.activation:
        raise InputError(
            f"--cache {config.cache} holds ranges for a {cache.target} grid; preset {quant.name!r} quantizes "
            f"activations to {quant.activation}",
            f"use the preset and --bits the cache was made with ({cache.target.bits}-bit activations"
            f"{', preset ' + str(cache.extra['preset'].get('name')) if 'preset' in cache.extra else ''}), "
            "or recalibrate with --data",
        )
    if cache.model_sha256 != model_sha:
        import logging

        logging.getLogger(__name__).warning("calibration cache was made for a different model file; tensor names match")
    return cache


def calibrate_model(config: CalibrateConfig, progress: Callable[[int, int], None] | None = None) -> CalibrateResult:
    """Calibrate and quantize ``config.model``; writes the QDQ model, its cache and manifest atomically."""
    from qdeploy.calib.cache import load_cache, save_cache
    from qdeploy.quant import get_preset, quantization_summary, quantize, tensors_to_calibrate
    from qdeploy.quant.quantize import calibration_model

    start = time.perf_counter()
    model = load_model(config.model)
    model_sha = file_sha256(config.model)
    quant = get_preset(config.preset, **config.preset_options)
    cached = load_cache(config.cache) if config.cache is not None else None
    if quant.full_integer and (config.target is not None or (cached is not None and cached.precision_map)):
        # integer-only tails and uint8 regions pin their tensors' precision, which a map must be free to change
        quant = dataclasses.replace(quant, full_integer=False, integer_region=False)
    if config.refine is not None:  # say it now, not after minutes of calibration
        check_refinable(model)
    smooth = None
    if quant.smooth_alpha > 0:  # channel smoothing rewrites the float model itself, before anything calibrates
        model, smooth = smoothed(model, config, quant, cached)
    means = qk_means(model, config) if quant.shift_qk else None  # shift_qk: q/k shifted before calibrating
    names = tensors_to_calibrate(model, quant, means)
    if not names:
        raise InputError(f"nothing to quantize in {config.model}: no {', '.join(quant.op_types)} nodes were selected",
                         "check --op-types / --include / --exclude")
    if cached is not None:
        cached = _check_cached(cached, config, model_sha, names, quant)
        ranges, method = dict(cached.ranges), cached.method  # the cache's method decided these ranges
        extra, cache_path = {"data": {"source": str(config.cache)}}, Path(config.cache)
    else:
        ranges, extra = _collect(calibration_model(model, quant, means), names, config, quant, progress)
        method, cache_path = config.method, config.cache_path
    qmodel = quantize(model, ranges, quant, means)  # before any write: a failure leaves no output behind
    refine_report: dict[str, Any] = {}
    if config.refine is not None:  # the cache keeps the observer's ranges; refinement acts on the model only
        qmodel, refine_report = run_refinement(model, qmodel, config)
    verified = None
    if cached is None and config.target is None and config.verify and config.method == "auto":
        verified = _verify(model, qmodel, quant, means, ranges, config, progress)
        qmodel, ranges = verified.model, verified.ranges
        repaired = _Repaired(qmodel, precision_map=verified.precision_map)
        extra["verify"] = verified.to_dict()
    else:
        repaired = _repair(model, qmodel, quant, means, names, ranges, cached, config, progress)
    qmodel = repaired.model
    if cached is not None:  # what the cached check kept (a faster kernel form) is part of the model
        from qdeploy.quant.kernel_forms import reapply_faster_form

        qmodel = reapply_faster_form(qmodel, cached.extra.get("verify"))
    if config.cache is None or config.target is not None:
        cache_path = config.cache_path
        record = _cache_record(cached, model_sha, method, extra, quant, ranges, means, repaired)
        if smooth is not None:
            from qdeploy.quant.smoothing import affine_to_json

            record = dataclasses.replace(record, extra=record.extra | {"smooth": affine_to_json(smooth)})
        save_cache(cache_path, _with_module_names(record, model))
    save_model(qmodel, config.output)
    kernels = integer_kernel_summary(config.output) if quant.name.startswith("ort-cpu") else {}
    fusion = fusion_summary(qmodel, quant.name)
    write_manifest(config.output, {"source_model": str(config.model), "source_sha256": model_sha,
                                   "method": method, "preset": quant.to_dict(), "data": extra["data"],
                                   "calibration_cache": str(cache_path)}
                   | ({"refine": refine_report} if refine_report else {})
                   | ({"target": repaired.record} if repaired.record else {})
                   | ({"verify": extra["verify"]} if verified is not None else {}))
    return CalibrateResult(config.output, cache_path, ranges, quantization_summary(qmodel), kernels,
                           time.perf_counter() - start, config.cache is not None, method, fusion, refine_report,
                           repaired.plan, repaired.analysis, verified)


AUTO_HOLDOUT = 0.2
"""Share of an image folder the default calibration keeps out to verify itself on (by file-name hash)."""
AUTO_HOLDOUT_MIN_FILES = 10
"""Below this many images a held-out part would be too small to judge; the check uses the calibration inputs."""


def default_holdout(method: str, verify: bool, data: Path | None, target: bool) -> float:
    """The ``--holdout`` used when the user gives none: a fifth of an image folder for ``auto``'s check.

    Why only then: an explicit target has its own held-out options, other methods do not verify, and
    arrays or small folders are kept whole (the check then says it ran on the calibration inputs).
    """
    if method != "auto" or not verify or target or data is None or not Path(data).is_dir():
        return 0.0
    from qdeploy.calib.data import IMAGE_SUFFIXES, list_files

    # counted as calibration lists them (subfolders included: a train/{T91,BSD200} folder is one set)
    images = sum(1 for p in list_files(Path(data)) if p.suffix.lower() in IMAGE_SUFFIXES)
    return AUTO_HOLDOUT if images >= AUTO_HOLDOUT_MIN_FILES else 0.0


def _verify(model: ir.Model, qmodel: ir.Model, quant: Any, means: Any, ranges: dict[str, TensorRange],
            config: CalibrateConfig, progress: Callable[[int, int], None] | None) -> Any:
    """The default's self-check and repair (:mod:`qdeploy.analyze.verify`) on held-out data."""
    from qdeploy.analyze.target import default_heldout
    from qdeploy.analyze.verify import QualityBar, verify_and_repair
    from qdeploy.quant import quantize

    bar = config.quality or QualityBar()
    specs = input_specs(model)
    held = default_heldout(model, config.data, specs, bar, config.threads)
    free = dataclasses.replace(quant, full_integer=False, integer_region=False)  # any tensor may be left float
    extra: dict[str, TensorRange] = {}
    collected: list[bool] = []

    def rebuild(r: Any, for_map: bool) -> ir.Model:
        if not for_map:
            return quantize(model, r, quant, means)
        if not collected:  # without uint8 regions, e.g. a Split's outputs feed convs: they need ranges of their own
            extra.update(_missing_ranges(model, free, means, ranges, config, progress))
            collected.append(True)
        return quantize(model, {**extra, **r}, free, means)

    from qdeploy.quant.kernel_forms import faster_form_for

    faster = faster_form_for(quant) if config.fast_weights else None
    verified = verify_and_repair(model, qmodel, ranges, rebuild, held, bar, _fusion_name(quant.name),
                                 config.threads, progress, faster)
    if verified.precision_map is not None and extra:  # the cache must rebuild the mapped model on its own
        verified = dataclasses.replace(verified, ranges={**extra, **verified.ranges})
    return verified


def _missing_ranges(model: ir.Model, free: Any, means: Any, ranges: dict[str, TensorRange], config: CalibrateConfig,
                    progress: Callable[[int, int], None] | None) -> dict[str, TensorRange]:
    """Ranges the placement without integer regions needs beyond ``ranges`` (one more observer pass)."""
    from qdeploy.quant import tensors_to_calibrate
    from qdeploy.quant.quantize import calibration_model

    missing = [n for n in tensors_to_calibrate(model, free, means) if n not in ranges]
    if not missing:
        return {}
    return _collect(calibration_model(model, free, means), missing, config, free, progress)[0]


def _with_module_names(record: Any, model: ir.Model) -> Any:
    """The cache with ``extra["modules"]``: {ONNX name: module label}, so a reader of the JSON sees
    ``body.2.c3 (Conv)`` beside ``conv2d_29`` (the ONNX names stay the keys everything reads by)."""
    from qdeploy.graph.names import merged_labels

    shown = merged_labels(model)
    return dataclasses.replace(record, extra=record.extra | {"modules": {n: shown.get(n, n) for n in record.ranges}})


def _fusion_name(preset: str) -> str:
    return "tensorrt" if preset.startswith("tensorrt") else "ort-cpu"


@dataclass(frozen=True)
class _Repaired:
    """The model after an accuracy target or a cached precision map, and what the cache should keep."""

    model: ir.Model
    plan: Any = None
    analysis: Any = None
    raise_ranges: dict[str, TensorRange] | None = None
    record: dict[str, Any] | None = None
    precision_map: dict[str, str] | None = None


def _repair(model: ir.Model, qmodel: ir.Model, quant: Any, means: Any, names: list[str],
            ranges: dict[str, TensorRange], cached: Any, config: CalibrateConfig,
            progress: Callable[[int, int], None] | None) -> _Repaired:
    """Meet ``config.target`` (sensitivity + precision search), or re-apply the cache's precision map.

    Why the cached map is applied on reuse: it is the user's (or a search's) decision about which
    tensors stay at which precision, so ``--cache`` must reproduce the repaired model, hand edits included.
    """
    from qdeploy.graph.passes import ApplyPrecisionMapPass

    if config.target is None:
        if cached is None or not cached.precision_map:
            return _Repaired(qmodel)
        raise_ranges = cached.raise_ranges()
        out = qmodel.clone()
        ApplyPrecisionMapPass(cached.precision_map, raise_ranges, model)(out)
        return _Repaired(out, precision_map=dict(cached.precision_map))
    from qdeploy.analyze.target import heldout_inputs, meet_target, plan_record

    raise_ranges = (cached.raise_ranges() if cached is not None and "raise_ranges" in cached.extra
                    else _raise_ranges(model, quant, means, names, ranges, config, progress))
    specs = input_specs(model)
    held = heldout_inputs(config.target, config.data, [s.name for s in specs], specs)
    fusion = "tensorrt" if quant.name.startswith("tensorrt") else "ort-cpu"
    analysis, plan = meet_target(model, qmodel, ranges, raise_ranges, held, config.target.target, fusion,
                                 config.threads, progress)
    return _Repaired(plan.model, plan, analysis, raise_ranges, plan_record(plan, held), dict(plan.precision_map))


def _raise_ranges(model: ir.Model, quant: Any, means: Any, names: list[str], ranges: dict[str, TensorRange],
                  config: CalibrateConfig, progress: Callable[[int, int], None] | None) -> dict[str, TensorRange]:
    """Bounds for tensors raised to 8 bits: one more observer pass on the 8-bit grid (below 8 bits only).

    Why not reuse the low-bit bounds: an observer clips for the grid it was given (16 levels at 4 bits);
    at 8 bits that clipping is pure loss, and a raise must recover accuracy, not keep the 4-bit error.
    """
    if quant.activation.bits >= 8:
        return ranges
    from qdeploy.quant.quantize import calibration_model

    quant8 = dataclasses.replace(quant, activation=dataclasses.replace(quant.activation, bits=8))
    return _collect(calibration_model(model, quant8, means), names, config, quant8, progress)[0]


def _cache_record(cached: Any, model_sha: str, method: str, extra: dict[str, Any], quant: Any,
                  ranges: dict[str, TensorRange], means: Any, repaired: _Repaired) -> Any:
    """The calibration cache to write: the observer's ranges plus, after a search, the plan."""
    from qdeploy.calib.attention_stats import qk_means_to_json
    from qdeploy.calib.cache import CalibrationCache

    added: dict[str, Any] = {"target": repaired.record} if repaired.record else {}
    if repaired.raise_ranges is not None and repaired.raise_ranges is not ranges:
        added["raise_ranges"] = {n: r.to_dict() for n, r in repaired.raise_ranges.items()}
    if cached is not None:
        return dataclasses.replace(cached, extra=cached.extra | added,
                                   precision_map=repaired.precision_map or cached.precision_map)
    data = extra["data"]
    shift = {"shift_qk": qk_means_to_json(means)} if means is not None else {}
    return CalibrationCache(
        model_sha256=model_sha, method=method, observer_config=extra["observer_config"], target=quant.activation,
        data_source=data["source"], data_count=data["count"], data_sha256=data["sha256"], ranges=ranges,
        extra={"preset": quant.to_dict()} | shift | added | ({"verify": extra["verify"]} if "verify" in extra else {}),
        precision_map=repaired.precision_map)

