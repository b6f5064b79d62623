"""``export_model``: PyTorch -> ONNX with the dynamo exporter, a TorchScript fallback and a parity check.

The steps, and why each exists:

1. Resolve the SPEC and make example inputs (seeded, in the value range the model expects).
2. Export with ``torch.onnx.export(dynamo=True)`` (the maintained exporter; it folds constants with
   ``optimize=True``). If it raises - data-dependent Python control flow is the usual cause - fall back
   to the TorchScript exporter and record why, so users learn what to fix.
3. Simplify with onnxsim; the result is kept only if it passes the checker, keeps the requested dynamic
   axes and still matches PyTorch, because a simplifier bug must never cost a correct export.
4. Parity: ONNX Runtime CPU vs PyTorch on photos for image inputs (a trained image net may blow up on
   noise; :mod:`qdeploy.export.natural`), seeded random values otherwise, and at a second size for
   dynamic axes; a mismatch is an :class:`ExportError` that names the numbers and what was fed.
5. Record which PyTorch module computed each value (``blocks.1.conv``) from the raw export's node
   metadata, which onnxsim drops, and store it in the model's metadata (:mod:`qdeploy.graph.names`):
   tables and reports show those names instead of ``conv2d_29``; the ONNX value names stay as they are.
6. Write the model atomically plus a ``manifest.json`` entry that records how it was made.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from qdeploy.errors import ExportError, InputError
from qdeploy.export.dynamic import Axes, dynamic_axes, output_axes, rename_dims, require_dynamic, second_size
from qdeploy.export.exporter_output import failure_reason, quiet_exporters
from qdeploy.export.natural import parity_inputs
from qdeploy.export.parity import (
    ParityReport,
    ParityTolerance,
    flatten_outputs,
    random_inputs,
    require_parity,
    run_parity,
)
from qdeploy.export.spec import ResolvedModel, resolve_spec
from qdeploy.graph.names import attach_modules, record_modules
from qdeploy.progress import announce, format_duration
from qdeploy.types import TensorSpec

if TYPE_CHECKING:
    import torch

__all__ = ["EXPORTERS", "ExportConfig", "ExportResult", "export_model", "failure_reason"]

EXPORTERS = ("auto", "dynamo", "torchscript")
MIN_OPSET = 17
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    """Everything ``qdeploy export`` needs (built by the CLI from its options).

    Attributes:
        spec: Model SPEC (see :mod:`qdeploy.export.spec`).
        output: Destination ``.onnx`` path; ``manifest.json`` is written beside it.
        input_shapes: One shape per positional input; empty means "use the model's example inputs".
        dynamic_batch: Make axis 0 of every input of rank >= 2 dynamic.
        dynamic_hw: Make the last two axes of every input of rank >= 3 dynamic (NCHW images).
        opset: ONNX opset (>= 17: LayerNormalization and the QDQ features later steps rely on).
        simplify: Run onnxsim after export (kept only if it still matches PyTorch).
        exporter: "auto" (dynamo, TorchScript if dynamo fails), "dynamo" or "torchscript".
        parity: Pass criteria of the ONNX-vs-PyTorch check.
        seed: Seed of the random example/parity inputs.
        input_range: Value range of random float inputs; None means the zoo entry's range, else [0, 1].
        threads: ONNX Runtime threads for the parity run (None: ORT default).
        data: Image file or folder whose images the parity check feeds to image inputs (None: bundled photos).
        random_parity: Feed uniform random values to image inputs too (the pre-photo behaviour).
        weights: State-dict file for a zoo model, instead of the zoo's own weights (None: the zoo's).
    """

    spec: str
    output: Path
    input_shapes: tuple[tuple[int, ...], ...] = ()
    dynamic_batch: bool = False
    dynamic_hw: bool = False
    opset: int = 18
    simplify: bool = True
    exporter: str = "auto"
    parity: ParityTolerance = field(default_factory=ParityTolerance)
    seed: int = 0
    input_range: tuple[float, float] | None = None
    threads: int | None = None
    data: Path | None = None
    random_parity: bool = False
    weights: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "input_shapes", tuple(tuple(int(d) for d in s) for s in self.input_shapes))
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset must be >= {MIN_OPSET}, got {self.opset}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if any(not s or min(s) <= 0 for s in self.input_shapes):
            raise ValueError(f"every input shape needs positive dimensions, got {self.input_shapes}")
        if self.input_range is not None and not self.input_range[0] < self.input_range[1]:
            raise ValueError(f"input_range low must be below high, got {self.input_range}")


@dataclass(frozen=True)
class ExportResult:
    """What an export produced and how (the CLI prints it, the manifest records it)."""

    path: Path
    exporter_used: str
    fallback_reason: str | None
    parity: ParityReport
    input_specs: list[TensorSpec]
    simplified: bool
    output_specs: list[TensorSpec] = field(default_factory=list)
    opset: int = 18
    source: str = ""
    kind: str = ""
    simplify_note: str | None = None
    manifest: Path | None = None
    named_values: int = 0


def export_model(config: ExportConfig) -> ExportResult:
    """Export ``config.spec`` to ONNX, check it against PyTorch and write it with its manifest."""
    if config.output.suffix != ".onnx" or config.output.is_dir():
        raise InputError(f"output must be an .onnx file path, got {config.output}",
                         "e.g. -o exports/net/model.onnx")
    resolved = resolve_spec(config.spec, config.weights)
    value_range = config.input_range or resolved.input_range or (0.0, 1.0)
    inputs = _example_inputs(resolved, config, value_range)
    axes = dynamic_axes(inputs, config.dynamic_batch, config.dynamic_hw)
    n_outputs = _count_outputs(resolved.module, inputs, resolved.source, config.exporter)
    model, used, reason = _export(resolved.module, inputs, n_outputs, axes, config)
    recorded = record_modules(model)  # before onnxsim drops the node metadata it is read from
    sets = [inputs] + ([second_size(inputs, axes, value_range, config.seed + 1)] if any(axes) else [])
    parity_sets, fed = parity_inputs(sets, value_range, config.data, not config.random_parity,
                                     given=inputs is resolved.example_inputs)
    model, simplified, note, report = _simplify_and_check(model, resolved.module, parity_sets, axes, config, fed)
    from qdeploy.graph.io import save_model

    named = attach_modules(model, recorded)
    save_model(model, config.output)
    result = ExportResult(config.output, used, reason, report, _specs(model.graph.inputs), simplified,
                          _specs(model.graph.outputs), model.opset_imports.get("", config.opset),
                          resolved.source, resolved.kind, note, named_values=named)
    manifest = _write_manifest(result, config, value_range)
    return dataclasses.replace(result, manifest=manifest)


def _example_inputs(resolved: ResolvedModel, config: ExportConfig,
                    value_range: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """User shapes win; else the model's own example inputs; else the zoo default shape."""
    import torch

    given = resolved.example_inputs
    if config.input_shapes:
        like = given if given is not None and len(given) == len(config.input_shapes) else \
            tuple(torch.empty(0) for _ in config.input_shapes)
        return random_inputs(like, config.input_shapes, value_range, config.seed)
    if resolved.kind == "zoo" and resolved.default_input_shapes:
        like = tuple(torch.empty(0) for _ in resolved.default_input_shapes)
        return random_inputs(like, resolved.default_input_shapes, value_range, config.seed)
    if given is not None:
        return given
    raise InputError(f"{resolved.source!r} comes without example inputs, so the input shape is unknown",
                     "pass --input-shape, e.g. --input-shape 1,3,64,64 (repeat it for several inputs)")


def _count_outputs(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], source: str = "",
                   exporter: str = "auto") -> int:
    """Outputs of one float forward, which is also timed and announced with the export that follows it."""
    import torch

    try:
        start = time.perf_counter()
        with torch.no_grad():
            count = len(flatten_outputs(module(*inputs)))
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        announce(f"export: float forward of {source or 'the model'} on {shapes}: "
                 f"{format_duration(time.perf_counter() - start)}; exporting to ONNX "
                 f"({'dynamo' if exporter == 'auto' else exporter} exporter: one torch.onnx.export call with no "
                 "progress of its own, often minutes for a large transformer)")
        return count
    except ExportError:
        raise
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise InputError(f"the model fails on inputs of shape {shapes}: {failure_reason(exc)}",
                         "check --input-shape: the number of inputs, channels and size the model "
                         "expects") from exc


def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], n_outputs: int, axes: Axes,
            config: ExportConfig) -> tuple[ir.Model, str, str | None]:
    """Run the chosen exporter; in "auto" mode fall back to TorchScript and return why."""
    reason, hint = None, ""
    if config.exporter in ("auto", "dynamo"):
        try:
            model = _export_dynamo(module, inputs, n_outputs, axes, config.opset)
            require_dynamic(model, axes, "the dynamo exporter")
            return model, "dynamo", None
        except Exception as exc:
            reason, hint = failure_reason(exc), getattr(exc, "hint", "")
            if config.exporter == "dynamo":
                raise ExportError(f"the dynamo exporter failed: {reason}",
                                  "use --exporter auto or torchscript, or make forward() torch.export-able "
                                  "(no Python branches on tensor values)") from exc
            announce(f"export: the dynamo exporter failed ({reason}); exporting with the TorchScript exporter")
    try:
        model = _export_torchscript(module, inputs, n_outputs, axes, config.opset)
        require_dynamic(model, axes, "the TorchScript exporter")
    except ExportError as exc:
        if reason is None:
            raise
        raise ExportError(f"both exporters failed. dynamo: {reason}. TorchScript: {exc.message}",
                          hint or exc.hint) from exc
    return model, "torchscript", reason


def _names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def _export_dynamo(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], n_outputs: int, axes: Axes,
                   opset: int) -> ir.Model:
    import torch

    dim = torch.export.Dim.DYNAMIC  # lets torch infer relations between inputs and divisibility
    dynamic_shapes = tuple(dict.fromkeys(entry, dim) or None for entry in axes) if any(axes) else None
    with quiet_exporters(stderr=True):
        program = torch.onnx.export(module, inputs, dynamo=True, opset_version=opset, optimize=True,
                                    input_names=_names("input", len(inputs)),
                                    output_names=_names("output", n_outputs),
                                    dynamic_shapes=dynamic_shapes, verbose=False, report=False)
    model = program.model
    rename_dims(model, axes)
    return model


def _export_torchscript(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], n_outputs: int, axes: Axes,
                        opset: int) -> ir.Model:
    import torch

    from qdeploy.graph.io import model_from_bytes

    in_names, out_names = _names("input", len(inputs)), _names("output", n_outputs)
    dynamic = {n: dict(a) for n, a in zip(in_names, axes) if a}
    with torch.no_grad():
        outs = flatten_outputs(module(*inputs))
    for name, out in zip(out_names, outs):  # outputs follow the inputs' dynamic axes by rank
        entry = {ax: f"{name}_{label}" for ax, label in output_axes(out.dim(), axes)}
        if entry:
            dynamic[name] = entry
    buf = io.BytesIO()
    try:
        with quiet_exporters():
            torch.onnx.export(module, inputs, buf, dynamo=False, opset_version=opset,
                              do_constant_folding=True,
                              input_names=in_names, output_names=out_names, dynamic_axes=dynamic or None)
    except Exception as exc:
        raise ExportError(f"the TorchScript exporter failed: {failure_reason(exc)}",
                          "the model uses something neither exporter supports; simplify forward() "
                          "(run with -vv for the exporters' logs)") from exc
    return model_from_bytes(buf.getvalue())


def _simplify(model: ir.Model, inputs: tuple[torch.Tensor, ...],
              axes: Axes) -> tuple[ir.Model | None, str | None]:
    """onnxsim's result, or (None, why it was not usable); dynamic axes stay dynamic."""
    import onnxsim

    from qdeploy.graph.io import check_model

    test_shapes = {v.name: list(t.shape) for v, t in zip(model.graph.inputs, inputs)} if any(axes) else None
    try:
        with quiet_exporters():
            proto, ok = onnxsim.simplify(ir.to_proto(model), check_n=0, test_input_shapes=test_shapes)
        if not ok:
            return None, "onnxsim reported a failed check; kept the unsimplified model"
        check_model(proto, "the onnxsim result")
        simplified = ir.from_proto(proto)
        require_dynamic(simplified, axes, "onnxsim")
    except Exception as exc:
        return None, f"onnxsim failed ({failure_reason(exc)}); kept the unsimplified model"
    return simplified, None


def _simplify_and_check(model: ir.Model, module: torch.nn.Module, parity_sets: list[tuple[torch.Tensor, ...]],
                        axes: Axes, config: ExportConfig,
                        fed: str = "") -> tuple[ir.Model, bool, str | None, ParityReport]:
    """Prefer the simplified model when it matches PyTorch; otherwise the plain export must match."""
    note = None
    if config.simplify:
        announce(f"export: simplifying with onnxsim ({len(model.graph)} nodes)")
        simplified, note = _simplify(model, parity_sets[0], axes)
        if simplified is not None:
            report = run_parity(module, simplified, parity_sets, config.parity, config.threads, fed)
            if report.passed:
                return simplified, True, None, report
            note = (f"the onnxsim result failed the parity check (SQNR {report.worst_sqnr_db:.1f} dB); "
                    "kept the unsimplified model")
        _LOG.info("%s", note)
    report = run_parity(module, model, parity_sets, config.parity, config.threads, fed)
    require_parity(report)
    return model, False, note, report


def _specs(values: Any) -> list[TensorSpec]:
    out = []
    for v in values:
        shape = tuple(d if isinstance(d, int) else (d.value if isinstance(d, ir.SymbolicDim) else None)
                      for d in (v.shape.dims if v.shape is not None else ()))
        dtype = v.dtype.numpy().name if v.dtype is not None else "float32"
        out.append(TensorSpec(v.name, shape, dtype))
    return out


def _write_manifest(result: ExportResult, config: ExportConfig, value_range: tuple[float, float]) -> Path:
    from qdeploy.artifacts import write_manifest

    spec_dict = lambda s: {"name": s.name, "shape": list(s.shape), "dtype": s.dtype}
    return write_manifest(result.path, {
        "stage": "export",
        "source_spec": result.source,
        "source_kind": result.kind,
        "inputs": [spec_dict(s) for s in result.input_specs],
        "outputs": [spec_dict(s) for s in result.output_specs],
        "exporter": result.exporter_used,
        "fallback_reason": result.fallback_reason,
        "opset": result.opset,
        "dynamic_batch": config.dynamic_batch,
        "dynamic_hw": config.dynamic_hw,
        "simplify": config.simplify,
        "simplified": result.simplified,
        "simplify_note": result.simplify_note,
        "input_range": list(value_range),
        "seed": config.seed,
        "weights": str(config.weights) if config.weights is not None else None,
        "parity_data": str(config.data) if config.data is not None else None,
        "parity": result.parity.to_dict(),
        "module_names": result.named_values,
    })
