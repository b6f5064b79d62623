"""The report's bar plots stay readable: no tick label overlaps another or leaves the figure, and the kind
legend never covers a bar (checked on the drawn figure's text boxes, with transformer-length names)."""

from __future__ import annotations

import itertools

import pytest

from qdeploy.analyze.report_plots import contribution_figure, sqnr_figure
from qdeploy.analyze.sensitivity import SensitivityResult, TensorSensitivity


def _result(n: int) -> SensitivityResult:
    """``n`` tensors named like SwinIR's (long module paths), a third of them weights."""
    tensors = []
    for i in range(n):
        kind = "weight" if i % 3 == 0 else "activation"
        block = f"layers.{i // 24}.residual_group.blocks.{i // 6 % 4}.attn.qkv"
        label = f"{block}.weight" if kind == "weight" else f"{block} (MatMul)"
        tensors.append(TensorSensitivity(f"/t{i}", kind, 4, (), 10.0 + i % 30, 30.0, 0.0, 30.0, 30.0,
                                         0.01 + (i % 7) / 20, rank=i + 1, index=i, label=label))
    return SensitivityResult(tuple(tensors), 20.0, 60.0, 4, {"total_s": 1.0})


def _boxes(fig):  # -> (tick label boxes with text, legend box, axes box, figure box)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    (ax,) = fig.axes
    boxes = []
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        for tick in axis.get_major_ticks():  # ticks outside the view are not drawn
            label = tick.label1
            if min(lo, hi) <= tick.get_loc() <= max(lo, hi) and label.get_visible() and label.get_text():
                boxes.append((label.get_text(), label.get_window_extent(renderer)))
    legend = fig.legends[0] if fig.legends else ax.get_legend()
    return boxes, legend.get_window_extent(renderer), ax.get_window_extent(renderer), fig.bbox


@pytest.mark.parametrize("n", [12, 40, 300])
@pytest.mark.parametrize("figure", [sqnr_figure, contribution_figure])
def test_tick_labels_never_overlap_and_the_legend_stays_off_the_bars(n: int, figure) -> None:
    boxes, legend, axes, whole = _boxes(figure(_result(n)))
    assert boxes
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), (a, b)
    for text, box in boxes:
        assert whole.x0 <= box.x0 and box.x1 <= whole.x1 and whole.y0 <= box.y0 and box.y1 <= whole.y1, text
    assert not legend.overlaps(axes)


def test_up_to_forty_tensors_each_row_names_its_module_and_number() -> None:
    result = _result(40)
    boxes, *_ = _boxes(sqnr_figure(result))
    names = [text for text, _ in boxes if "#" in text]
    assert len(names) == 40
    first = result.tensors[0]
    assert names[0] == f"{first.label}  #1"  # graph order from the top; short enough to be shown whole
    assert all(len(name.split("  #")[0]) <= 56 for name in names)
