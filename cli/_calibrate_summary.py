"""What ``qdeploy calibrate`` prints when it is done: the JSON result, the tables and the check's lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qdeploy_cli._common import name_cell

from qdeploy.progress import format_elapsed

__all__ = ["print_summary", "result_dict"]


def result_dict(result: Any, config: Any) -> dict[str, Any]:
    return {
        "output": str(result.output), "cache": str(result.cache), "method": result.method, "preset": config.preset,
        "reused_cache": result.reused_cache, "seconds": round(result.seconds, 3), "summary": result.summary,
        "integer_kernels": result.kernels, "fusion": getattr(result, "fusion", {}),
        "tensors": {k: v.to_dict() for k, v in result.ranges.items()}, "refine": getattr(result, "refine", {}),
        "plan": result.plan.to_dict() if getattr(result, "plan", None) is not None else None,
        "verify": result.verified.to_dict() if getattr(result, "verified", None) is not None else None,
    }


def print_summary(con: Any, result: Any, config: Any) -> None:
    worst = sorted(result.ranges.values(), key=lambda r: -r.clipped_fraction)
    title = f"calibrated {len(result.ranges)} activation tensors ({result.method}, {_grid_label(config)})"
    con.print(_range_table(worst[:12], _module_labels(result.cache), title))
    if len(worst) > 12:
        con.print(f"  ... +{len(worst) - 12} more tensors in {result.cache}")
    con.print(f"quantized: {_summary_line(result.summary)}")
    if result.kernels:
        con.print(f"ONNX Runtime CPU integer kernels: {_counts(result.kernels.get('integer_ops')) or 'none'}; "
                  f"float compute ops left: {_counts(result.kernels.get('float_compute_ops')) or 'none'}")
    refined = getattr(result, "refine", None)
    if refined:
        con.print(f"DQC: loss {refined.get('initial_loss', float('nan')):.4g} -> "
                  f"{refined.get('final_loss', float('nan')):.4g} in {format_elapsed(refined.get('seconds', 0))}"
                  f"{'' if refined.get('applied', True) else ' (no improvement: calibrated scales kept)'}")
    placement = (getattr(result, "fusion", None) or {}).get("line")
    if getattr(result, "plan", None) is not None:
        _print_plan(con, result.plan, placement)
    if getattr(result, "verified", None) is not None:
        _print_verified(con, result.verified)
    if getattr(result, "fusion", None):
        con.print(f"QDQ placement: {result.fusion['line']}")
    con.print(f"wrote {result.output}  (cache {result.cache}, {format_elapsed(result.seconds, tenths=True)}"
              f"{', ranges reused from cache' if result.reused_cache else ''})")


def _range_table(ranges: list[Any], labels: dict[str, str], title: str) -> Any:
    """Observed and chosen bounds per tensor, low above high, so the names get the width.

    Why stacked: four number columns side by side left a name 13 characters at 80 columns, and
    ``layers.0.bloc`` says nothing; the name cell has two lines anyway (module, then ONNX name).
    """
    from rich.table import Table

    table = Table(title=title)
    table.add_column("tensor (module / ONNX name)", overflow="fold")
    table.add_column("observed\nmin / max", justify="right")
    table.add_column("chosen\nlo / hi", justify="right")
    table.add_column("clipped %", justify="right")
    for r in ranges:
        table.add_row(name_cell(r.name, labels), f"{r.observed_min:.4g}\n{r.observed_max:.4g}",
                      f"{r.lo:.4g}\n{r.hi:.4g}", f"{100 * r.clipped_fraction:.3f}")
    return table


def _print_plan(con: Any, plan: Any, placement: str | None = None) -> None:
    """The target search's outcome: met or not, the precision counts, size and predicted speed cost (unless
    it is the ``placement`` line printed after it anyway: the plan's model is the model written)."""
    reached = f"output SQNR {plan.sqnr_db:.2f} dB"
    if plan.score is not None and plan.float_score is not None:
        reached += f", task loss {plan.float_score - plan.score:.3f} dB"
    verdict = "[green]met[/green]" if plan.met else "[red]NOT met[/red] (best map kept; everything raised)"
    con.print(f"target {plan.target}: {verdict}; {reached}"
              + (f"; measured as {plan.measured_on}" if getattr(plan, "measured_on", "") else ""))
    counts = ", ".join(f"{n} {label}" for label, n in sorted(plan.counts.items()))
    con.print(f"precision map: {counts}; packed size {plan.size_bytes / 1024:.1f} KiB "
              f"(lowest bits {plan.base_size_bytes / 1024:.1f} KiB, float {plan.float_size_bytes / 1024:.1f} KiB); "
              f"{len(plan.candidates)} candidates in {format_elapsed(plan.seconds)}")
    if plan.speed.get("line") and plan.speed["line"] != placement:
        con.print(f"predicted speed cost: {plan.speed['line']}")


def _print_verified(con: Any, v: Any) -> None:
    """auto's check: the bar, where it was measured, before -> after, and every tensor it changed and why."""
    from rich.table import Table

    def fmt(sqnr: float, loss: float | None) -> str:
        return f"output SQNR {sqnr:.2f} dB" + (f", Y-PSNR loss {loss:.3f} dB" if loss is not None else "")

    verdict = "[green]met[/green]" if v.met else "[red]NOT met[/red] (best repair kept)"
    con.print(f"check ({v.bar}): {verdict}; measured as {v.measured_on}")
    if not v.changes:
        skipped = "repair_skipped" in getattr(v, "timings", {})
        con.print(f"  calibrated: {fmt(v.before_sqnr_db, v.before_loss_db)}; no tensor changed"
                  + ("; repair skipped: estimated over the time budget (see the warning above)" if skipped else ""))
        _print_faster(con, getattr(v, "faster", None))
        return
    con.print(f"  before repair {fmt(v.before_sqnr_db, v.before_loss_db)}; "
              f"after {fmt(v.after_sqnr_db, v.after_loss_db)}")
    table = Table(title=f"repaired {len(v.changes)} tensor(s): range method switched where that measured best at "
                        "the output; float for the shortest prefix of the noise ranking that meets the bar")
    for col in ("tensor", "made by", "before", "after", "why"):
        table.add_column(col, overflow="fold")
    for c in v.changes:
        table.add_row(c.tensor, c.producer, c.before, c.after, c.why)  # "made by" is the module label
    con.print(table)
    _print_faster(con, getattr(v, "faster", None))


def _print_faster(con: Any, faster: dict[str, Any] | None) -> None:
    """The faster kernel form auto tried last, and whether it was kept (with what it measured)."""
    if not faster:
        return
    loss = faster.get("loss_db")
    measured = f"output SQNR {faster['sqnr_db']:.2f} dB" + (f", Y-PSNR loss {loss:.3f} dB" if loss is not None else "")
    verdict = "kept" if faster["kept"] else "not kept"
    con.print(f"  faster form ({faster['form']}; {faster['convs']} convs): {measured}: {verdict}, {faster['why']}")


def _module_labels(cache: Path) -> dict[str, str]:
    """{ONNX name: module label} the pipeline stored in the cache (empty when absent or unreadable)."""
    import json

    try:
        return dict(json.loads(Path(cache).read_text()).get("extra", {}).get("modules", {}))
    except (OSError, ValueError, AttributeError):
        return {}


def _grid_label(config: Any) -> str:
    """The preset and the bits it really ran at (a W4A4 run of ort-cpu-int8 is not INT8)."""
    bits = config.preset_options.get("weight_bits")
    act = config.preset_options.get("activation")
    if bits is None and act is None:
        return config.preset
    return f"{config.preset} at W{bits or 8}A{getattr(act, 'bits', 8)}"


def _counts(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted((counts or {}).items()))


def _summary_line(summary: dict[str, Any]) -> str:
    """quantization_summary as one readable line instead of a Python dict."""
    ops = _counts(summary.get("quantized_nodes")) or "no"
    left = _counts(summary.get("float_nodes")) or "none"
    return (f"{ops} node(s); {summary.get('qdq_pairs', 0)} Q/DQ pairs, {summary.get('weights_quantized', 0)} "
            f"weights, {summary.get('biases_quantized', 0)} biases; left float: {left}")
