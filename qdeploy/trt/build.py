"""``build_engine``: ONNX -> serialized TensorRT / TensorRT-RTX engine, with timing and engine caches.

One code path for both flavours (they share the Python API; see :mod:`qdeploy.trt.loader`):

1. load + check the ONNX file; decide strongly typed (explicit QDQ) vs flag-driven precision;
2. for FP16 in strongly typed mode rewrite the graph to float16 (:func:`qdeploy.trt.fp16.to_float16`),
   because there the tensor types *are* the precision;
3. look the engine up in the engine cache (key: model bytes, build options, TensorRT version, GPU);
4. parse with ``OnnxParser`` (every parser error is reported, not just the first), add one optimisation
   profile for dynamic inputs, set flags / workspace / timing cache, build, write atomically.

TensorRT-RTX builds ahead of time on a machine without a GPU ("cpu-aot"), which is how CI checks that an
exported graph parses and compiles. Full TensorRT (``import tensorrt``) follows TensorRT 10's documented
API and is untested here: no machine available to this project can install it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx_ir as ir

from qdeploy.errors import InputError, UnsupportedModelError
from qdeploy.trt.loader import FLAVORS, CollectingLogger, gpu_name, import_trt, trt_version
from qdeploy.trt.network import (
    add_profile,
    load_timing_cache,
    network_layers,
    parser_failure,
    save_timing_cache,
    write_bytes,
)
from qdeploy.trt.shapes import ShapeRange, check_ranges

__all__ = ["PRECISIONS", "BuildConfig", "BuildResult", "build_engine", "engine_cache_key", "is_qdq_model"]

PRECISIONS = ("int8", "fp16", "int4-weights", "best", "fp32")
_FP16_REWRITE_VERSION = "fp16-v1"  # part of the cache key: a converter change must not reuse old engines


@dataclass(frozen=True)
class BuildConfig:
    """How to build an engine.

    Attributes:
        precision: "int8" (QDQ model: quantized layers INT8, the rest FP32), "fp16" (float model in FP16),
            "best" (INT8 where quantized, FP16 elsewhere), "int4-weights" (a model with INT4 weight DQs,
            weight-only), "fp32".
        flavor: "tensorrt" or "tensorrt-rtx".
        shapes: min/opt/max per input (:class:`ShapeRange`, or a mapping name -> shape / (min, opt, max)).
        timing_cache: File reused across builds (created when missing). TensorRT-RTX accepts and writes it
            but ignores its content (RTX 1.2+ made timing caches no-ops); full TensorRT uses it.
        engine_cache_dir: Folder of ``<key>.plan`` files; an identical build returns the cached engine.
        strongly_typed: None = strongly typed when the installed TensorRT supports it and the model is
            QDQ (explicit quantization). TensorRT-RTX is always strongly typed.
        workspace_mb: Workspace memory-pool limit (None: TensorRT's default, the device memory).
    """

    precision: str = "int8"
    flavor: str = "tensorrt-rtx"
    shapes: tuple[ShapeRange, ...] = ()
    timing_cache: Path | None = None
    engine_cache_dir: Path | None = None
    strongly_typed: bool | None = None
    workspace_mb: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {self.flavor!r}")
        if self.workspace_mb is not None and self.workspace_mb <= 0:
            raise ValueError(f"workspace_mb must be positive, got {self.workspace_mb}")
        if self.flavor == "tensorrt-rtx" and self.strongly_typed is False:
            raise ValueError("TensorRT-RTX builds only strongly typed networks; leave strongly_typed as None")
        object.__setattr__(self, "shapes", _as_ranges(self.shapes))
        for name in ("timing_cache", "engine_cache_dir"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))

    def key_fields(self) -> dict[str, Any]:
        """The options that change the engine (the cache key's non-model part)."""
        return {
            "precision": self.precision,
            "flavor": self.flavor,
            "workspace_mb": self.workspace_mb,
            "strongly_typed": self.strongly_typed,
            "shapes": [s.to_dict() for s in self.shapes],
        }


def _as_ranges(shapes: Any) -> tuple[ShapeRange, ...]:
    if isinstance(shapes, ShapeRange):
        return (shapes,)
    if isinstance(shapes, Mapping):
        out = []
        for name, value in shapes.items():
            if isinstance(value, ShapeRange):
                out.append(value.with_name(name))
            elif value and isinstance(value[0], Sequence):
                out.append(ShapeRange(name, *value))
            else:
                out.append(ShapeRange(name, value, value, value))
        return check_ranges(out)
    return check_ranges(tuple(shapes or ()))


@dataclass(frozen=True)
class BuildResult:
    """A built (or cache-hit) engine and how it was made.

    ``layers`` lists the parsed network's layers (name, type, output dtype) before TensorRT's fusions:
    fused per-kernel information needs a GPU (engine inspector), which CPU-only AOT builds cannot use.
    """

    engine: bytes
    seconds: float
    cached: bool
    key: str
    flavor: str
    precision: str
    strongly_typed: bool
    trt_version: str
    device: str
    path: Path | None = None
    layers: tuple[dict[str, str], ...] = ()
    parser_errors: int = 0
    fp16_rewrite: bool = False
    messages: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``qdeploy build --json`` (without the engine bytes)."""
        return {
            "path": str(self.path) if self.path else None,
            "bytes": len(self.engine),
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            "key": self.key,
            "flavor": self.flavor,
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "trt_version": self.trt_version,
            "device": self.device,
            "fp16_rewrite": self.fp16_rewrite,
            "parser_errors": self.parser_errors,
            "layers": list(self.layers),
        }


def is_qdq_model(model: ir.Model) -> bool:
    """True when the graph carries explicit quantization (any standard Q or DQ node)."""
    return any(n.domain == "" and n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph)


def _has_int4_weights(model: ir.Model) -> bool:
    int4 = {ir.DataType.INT4, ir.DataType.UINT4}
    return any(
        n.op_type == "DequantizeLinear"
        and n.inputs[0] is not None
        and n.inputs[0].const_value is not None
        and n.inputs[0].const_value.dtype in int4
        for n in model.graph
    )


def engine_cache_key(model_bytes: bytes, config: BuildConfig, version: str, device: str) -> str:
    """sha256 of the model bytes, the build options, the TensorRT version and the device name."""
    h = hashlib.sha256(model_bytes)
    meta = {**config.key_fields(), "trt": version, "device": device, "rewrite": _FP16_REWRITE_VERSION}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def _resolve_typing(trt: ModuleType, config: BuildConfig, qdq: bool) -> bool:
    supported = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    if config.flavor == "tensorrt-rtx":
        return True
    if config.strongly_typed and not supported:
        raise InputError(
            f"TensorRT {trt_version(trt)} has no strongly typed networks",
            "upgrade to TensorRT >= 9, or pass strongly_typed=False",
        )
    return config.strongly_typed if config.strongly_typed is not None else (supported and qdq)


def _check_precision(model: ir.Model, precision: str, qdq: bool) -> None:
    if precision == "int8" and not qdq:
        raise InputError(
            "--precision int8 needs a QDQ model (explicit quantization); this one has no "
            "QuantizeLinear/DequantizeLinear",
            "calibrate first: qdeploy calibrate MODEL.onnx --preset tensorrt-int8 --data ... "
            "-o MODEL.qdq.onnx",
        )
    if precision == "fp16" and qdq:
        raise InputError(
            "--precision fp16 takes a float model; this one is quantized (QDQ)",
            "use --precision best (INT8 where quantized, FP16 elsewhere) or int8",
        )
    if precision == "int4-weights" and not _has_int4_weights(model):
        raise UnsupportedModelError(
            "--precision int4-weights needs DequantizeLinear nodes with INT4 weight "
            "initializers; this model has none",
            "quantize MatMul/Gemm weights to block-wise INT4 first: "
            "qdeploy.quant.weight_only.quantize_weights_only(model, WeightOnlyConfig())",
        )


def _prepare(onnx_path: Path, config: BuildConfig, trt: ModuleType) -> tuple[bytes, bytes, bool, bool]:
    """(original bytes, bytes to parse, strongly typed, fp16 rewritten)."""
    from qdeploy.graph.io import load_model, model_to_bytes

    raw = onnx_path.read_bytes()
    model = load_model(onnx_path)
    qdq = is_qdq_model(model)
    _check_precision(model, config.precision, qdq)
    strongly = _resolve_typing(trt, config, qdq)
    rewrite = strongly and config.precision in ("fp16", "best", "int4-weights")
    if rewrite:
        from qdeploy.trt.fp16 import to_float16

        return raw, model_to_bytes(to_float16(model)), strongly, True
    return raw, raw, strongly, False


def build_engine(onnx_path: str | Path, config: BuildConfig, output: str | Path | None = None) -> BuildResult:
    """Build (or fetch from ``config.engine_cache_dir``) a serialized engine for ``onnx_path``.

    Writes the engine to ``output`` atomically when given. Raises:
        BackendUnavailableError: the flavour's package is not installed (message says what to pip install).
        UnsupportedModelError: the parser rejected the model (all its errors, each with node and reason),
            or the builder failed (TensorRT's last error messages).
        InputError: precision and model do not fit (e.g. int8 on a float model), missing shapes.
    """
    start = time.perf_counter()
    onnx_path = Path(onnx_path)
    trt = import_trt(config.flavor)
    raw, data, strongly, rewrite = _prepare(onnx_path, config, trt)
    version = trt_version(trt)
    device = gpu_name() or "cpu-aot"
    key = engine_cache_key(raw, config, version, device)
    common = {
        "key": key,
        "flavor": config.flavor,
        "precision": config.precision,
        "strongly_typed": strongly,
        "trt_version": version,
        "device": device,
        "fp16_rewrite": rewrite,
    }
    cached = _cache_lookup(config, key)
    if cached is not None:
        path = write_bytes(output, cached)
        return BuildResult(cached, time.perf_counter() - start, True, path=path, **common)
    engine, layers, logger = _build(trt, onnx_path, data, config, strongly)
    if config.engine_cache_dir is not None:
        write_bytes(config.engine_cache_dir / f"{key}.plan", engine)
    path = write_bytes(output, engine)
    return BuildResult(
        engine,
        time.perf_counter() - start,
        False,
        path=path,
        layers=layers,
        messages=tuple(f"[{s}] {m}" for s, m in logger.messages),
        **common,
    )


def _cache_lookup(config: BuildConfig, key: str) -> bytes | None:
    if config.engine_cache_dir is None:
        return None
    path = config.engine_cache_dir / f"{key}.plan"
    return path.read_bytes() if path.is_file() and path.stat().st_size > 0 else None


def _build(
    trt: ModuleType, onnx_path: Path, data: bytes, config: BuildConfig, strongly: bool
) -> tuple[bytes, tuple[dict[str, str], ...], Any]:
    logger = CollectingLogger(trt)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data, str(onnx_path)):
        raise parser_failure(parser, onnx_path, config.flavor)
    bconfig = builder.create_builder_config()
    _set_flags(trt, bconfig, config, strongly)
    if config.workspace_mb:
        bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    add_profile(builder, bconfig, network, config.shapes)
    timing = load_timing_cache(bconfig, config.timing_cache)
    serialized = builder.build_serialized_network(network, bconfig)
    if serialized is None:
        errors = logger.errors()[-5:] or ["(no message)"]
        raise UnsupportedModelError(
            f"{config.flavor} could not build an engine for {onnx_path}: " + " | ".join(errors),
            "see the messages; run with -vv for TensorRT's full log",
        )
    if timing is not None and config.timing_cache is not None:
        save_timing_cache(bconfig, config.timing_cache)
    return bytes(serialized), network_layers(network), logger


def _set_flags(trt: ModuleType, bconfig: Any, config: BuildConfig, strongly: bool) -> None:
    """Weakly typed networks take precision from builder flags; strongly typed ones from tensor types."""
    if strongly:
        return
    wanted = {
        "int8": ("INT8",),
        "fp16": ("FP16",),
        "best": ("INT8", "FP16"),
        "int4-weights": ("INT4", "FP16"),
        "fp32": (),
    }[config.precision]
    for name in wanted:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:
            raise InputError(
                f"{config.flavor} {trt_version(trt)} has no BuilderFlag.{name}",
                "use a TensorRT 10.x release or another --precision",
            )
        bconfig.set_flag(flag)
