"""Export parity: does the ONNX model compute what the PyTorch model computes?

Every export ends with this check because exporters fail silently: a traced Python branch, a
shape baked in as a constant, an op lowered with a different rounding mode all produce a valid ONNX file
with wrong numbers. The check runs ONNX Runtime (CPU) and PyTorch on the same inputs (photos for image
inputs, see :mod:`qdeploy.export.natural`; seeded random otherwise) and judges each output with two
numbers: SQNR (relative, catches broad drift) and the maximum absolute error scaled by the reference
output's range (catches a few badly wrong pixels that SQNR averages away).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qdeploy.errors import ExportError

if TYPE_CHECKING:
    import onnx_ir as ir
    import torch

__all__ = ["ParityCheck", "ParityReport", "ParityTolerance", "flatten_outputs", "random_inputs",
           "require_parity", "run_parity"]

# An output range above this (or non-finite) means the network blew up on the inputs it was fed.
_EXPLODED = 1e6


@dataclass(frozen=True)
class ParityTolerance:
    """Pass criteria for one output.

    Attributes:
        min_sqnr_db: Lowest acceptable SQNR of ONNX vs PyTorch. Float32 kernels in two runtimes differ by
            summation order only, which gives well over 100 dB on conv nets; 60 dB leaves room for deep
            nets while still catching any real mismatch (a wrong op is typically < 30 dB).
        max_abs_rel: Largest acceptable |ONNX - PyTorch| as a fraction of the reference output's range
            (max - min), so the bound means the same for outputs in [0, 1] and in [0, 255].
    """

    min_sqnr_db: float = 60.0
    max_abs_rel: float = 1e-3

    def __post_init__(self) -> None:
        if math.isnan(self.min_sqnr_db):
            raise ValueError("min_sqnr_db must be a number")
        if not (self.max_abs_rel > 0 and math.isfinite(self.max_abs_rel)):
            raise ValueError(f"max_abs_rel must be a positive finite fraction, got {self.max_abs_rel}")


@dataclass(frozen=True)
class ParityCheck:
    """One output compared at one set of input shapes."""

    input_shapes: tuple[tuple[int, ...], ...]
    output: str
    sqnr_db: float
    max_abs_error: float
    max_abs_allowed: float
    output_range: float
    min_sqnr_db: float

    @property
    def passed(self) -> bool:
        """True when both criteria hold (NaN anywhere fails: comparisons with NaN are False)."""
        return self.sqnr_db >= self.min_sqnr_db and self.max_abs_error <= self.max_abs_allowed

    def describe(self) -> str:
        """One line with the measured numbers and the bounds they were held to."""
        shapes = ", ".join("x".join(map(str, s)) for s in self.input_shapes)
        return (f"output {self.output!r} at input {shapes}: SQNR {self.sqnr_db:.1f} dB (need >= "
                f"{self.min_sqnr_db:g}), max abs error {self.max_abs_error:.3g} (allowed "
                f"{self.max_abs_allowed:.3g} = tolerance x output range {self.output_range:.3g})")


@dataclass(frozen=True)
class ParityReport:
    """All checks of one export; ``passed`` only if every check passed; ``inputs`` says what was fed."""

    checks: tuple[ParityCheck, ...]
    tolerance: ParityTolerance
    inputs: str = ""

    @property
    def passed(self) -> bool:
        """True when every output passed at every input size."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def worst_sqnr_db(self) -> float:
        """Lowest SQNR over all checks (NaN if any check produced NaN)."""
        values = [c.sqnr_db for c in self.checks]
        return float("nan") if any(math.isnan(v) for v in values) else min(values, default=float("nan"))

    @property
    def worst_max_abs_error(self) -> float:
        """Largest max-abs error over all checks (NaN if any check produced NaN)."""
        values = [c.max_abs_error for c in self.checks]
        return float("nan") if any(math.isnan(v) for v in values) else max(values, default=float("nan"))

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form (non-finite floats as "inf"/"nan" strings) for manifests and ``--json``."""
        return _json_floats({
            "passed": self.passed,
            "inputs": self.inputs,
            "min_sqnr_db": self.tolerance.min_sqnr_db,
            "max_abs_rel": self.tolerance.max_abs_rel,
            "worst_sqnr_db": self.worst_sqnr_db,
            "worst_max_abs_error": self.worst_max_abs_error,
            "checks": [{"input_shapes": [list(s) for s in c.input_shapes], "output": c.output,
                        "sqnr_db": c.sqnr_db, "max_abs_error": c.max_abs_error,
                        "max_abs_allowed": c.max_abs_allowed, "passed": c.passed} for c in self.checks],
        })


def _json_floats(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return "nan" if math.isnan(data) else ("inf" if data > 0 else "-inf")
    if isinstance(data, dict):
        return {k: _json_floats(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_json_floats(v) for v in data]
    return data


def flatten_outputs(value: Any) -> list[torch.Tensor]:
    """Tensors of a module's output in the order exporters emit them (tuples/lists/dicts, depth first)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in flatten_outputs(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_outputs(v)]
    raise ExportError(f"the model returned a {type(value).__name__}, which ONNX cannot represent",
                      "return a tensor, or a tuple/list/dict of tensors, from forward()")


def random_inputs(like: Sequence[torch.Tensor], shapes: Sequence[tuple[int, ...]],
                  input_range: tuple[float, float], seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded inputs with the dtypes of ``like`` and the given ``shapes``.

    Float inputs are uniform in ``input_range``; integer/bool inputs are drawn from the value range seen
    in ``like`` (token ids, masks) so they stay valid for the model.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    lo, hi = input_range
    out = []
    for ref, shape in zip(like, shapes, strict=True):
        if ref.dtype.is_floating_point:
            out.append((torch.rand(shape, generator=gen) * (hi - lo) + lo).to(ref.dtype))
        else:
            low, high = (int(ref.min()), int(ref.max())) if ref.numel() else (0, 1)
            out.append(torch.randint(low, high + 1, shape, generator=gen).to(ref.dtype))
    return tuple(out)


def _reference(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    import torch

    try:
        with torch.no_grad():
            result = module(*inputs)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"the PyTorch model fails on inputs of shape {shapes}: {type(exc).__name__}: "
                          f"{first}", "check --input-shape (and --dynamic-hw: the model must accept other "
                          "sizes)") from exc
    return [t.detach().cpu().numpy() for t in flatten_outputs(result)]


def _check(shapes: tuple[tuple[int, ...], ...], name: str, ref: np.ndarray, out: np.ndarray,
           tol: ParityTolerance) -> ParityCheck:
    from qdeploy.evaluate.metrics import max_abs_error, sqnr_db

    if ref.shape != out.shape:
        raise ExportError(f"ONNX output {name!r} has shape {out.shape}, PyTorch gives {ref.shape} "
                          f"(inputs {list(shapes)})",
                          "the exporter baked in a shape; report the model to qdeploy")
    ref64 = np.asarray(ref, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf on a blown-up output: NaN fails the check
        out_range = float(ref64.max() - ref64.min()) if ref64.size else 0.0
        sqnr, max_abs = sqnr_db(ref, out), max_abs_error(ref, out)
    scale = out_range if out_range > 0 else max(float(np.abs(ref64).max(initial=0.0)), 1.0)
    return ParityCheck(shapes, name, sqnr, max_abs, tol.max_abs_rel * scale, out_range, tol.min_sqnr_db)


def run_parity(module: torch.nn.Module, model: ir.Model, input_sets: Sequence[tuple[torch.Tensor, ...]],
               tolerance: ParityTolerance, threads: int | None = None, inputs_note: str = "") -> ParityReport:
    """Compare ONNX Runtime CPU on ``model`` with ``module`` on each input set; never raises on mismatch.

    Inputs are matched to the ONNX graph by position among the graph's inputs; an exporter that dropped
    an unused input is reported as an error because the graph no longer has the module's signature.
    """
    from qdeploy.backends import SessionOptions, get_backend
    from qdeploy.progress import announce

    checks: list[ParityCheck] = []
    announce(f"export: parity check, ONNX Runtime CPU vs PyTorch on {len(input_sets)} input set(s)")
    with get_backend("ort-cpu").open(model, SessionOptions(threads=threads)) as session:
        names = [s.name for s in session.inputs]
        start = time.perf_counter()  # after the session opened: the estimate is of the runs
        for k, inputs in enumerate(input_sets, 1):
            if len(names) != len(inputs):
                raise ExportError(f"the ONNX graph has {len(names)} inputs {names}, the module takes "
                                  f"{len(inputs)}", "an unused forward() argument was dropped by the "
                                  "exporter; remove it from forward()")
            refs = _reference(module, inputs)
            outs = session.run({n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})
            out_names = [s.name for s in session.outputs]
            if len(refs) != len(out_names):
                raise ExportError(f"the ONNX graph has {len(out_names)} outputs, PyTorch returns {len(refs)}",
                                  "return only tensors from forward() (no None or Python numbers)")
            shapes = tuple(tuple(t.shape) for t in inputs)
            checks += [_check(shapes, n, r, outs[n], tolerance) for n, r in zip(out_names, refs)]
            if k == 1 and len(input_sets) > 1:
                _announce_estimate(time.perf_counter() - start, input_sets)
    return ParityReport(tuple(checks), tolerance, inputs_note)


def _announce_estimate(first_s: float, input_sets: Sequence[tuple[torch.Tensor, ...]]) -> None:
    """The whole check's estimate from its first input set, scaled by each set's number of input values
    (the second set of a dynamic-H/W export is larger: 6x the pixels at 128x192 after 64x64)."""
    from qdeploy.progress import announce, estimate_line

    sizes = [max(sum(t.numel() for t in inputs), 1) for inputs in input_sets]
    total_s = first_s * sum(sizes) / sizes[0]
    announce(estimate_line("parity check", len(sizes), "input sets", total_s / len(sizes),
                           "first input set measured, scaled by input size"))


def require_parity(report: ParityReport, what: str = "the exported ONNX model") -> None:
    """Raise :class:`ExportError` naming every failing check's numbers when ``report`` did not pass."""
    failed = [c for c in report.checks if not c.passed]
    if not failed and report.checks:
        return
    detail = "; ".join(c.describe() for c in failed) or "no outputs were compared"
    fed = f" ({report.inputs})" if report.inputs else ""
    if any(not math.isfinite(c.output_range) or c.output_range > _EXPLODED for c in report.checks):
        raise ExportError(f"{what} does not match PyTorch{fed}: {detail}",
                          "the PyTorch output itself is huge or not finite on these inputs, so the comparison "
                          "is meaningless: feed inputs like the model's real ones (--data DIR of images, the "
                          "right --input-range) rather than relaxing the tolerances")
    raise ExportError(f"{what} does not match PyTorch{fed}: {detail}",
                      "the model has ops that differ between PyTorch and ONNX Runtime (randomness, in-place "
                      "tricks, data-dependent Python); try --exporter torchscript, or relax the check with "
                      "--min-sqnr / --max-abs-rel if the difference is expected")
