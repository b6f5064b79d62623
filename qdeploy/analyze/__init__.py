"""Find the quantized tensor that hurts, and repair a QDQ model to an accuracy target.

- :func:`analyze_sensitivity`: per quantized tensor, its own SQNR and the end-to-end output loss when
  only it is quantized / only it is left float, ranked (one switchable ORT session, see
  :mod:`qdeploy.analyze.switch`);
- :func:`search_precision`: mixed precision to a target (raise or leave float the most sensitive
  tensors), the result a hand-editable precision map applied by
  :class:`qdeploy.graph.passes.ApplyPrecisionMapPass`;
- :func:`write_analysis_report`: ``report.md`` + self-contained ``report.html`` with PNG plots.
"""

from __future__ import annotations

from qdeploy.analyze.sensitivity import (
    AnalyzeConfig,
    Evaluator,
    SensitivityResult,
    TensorSensitivity,
    analyze_sensitivity,
    output_sqnr,
)

__all__ = [
    "AnalyzeConfig",
    "Evaluator",
    "SensitivityResult",
    "TensorSensitivity",
    "analyze_sensitivity",
    "output_sqnr",
]
