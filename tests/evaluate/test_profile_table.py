"""The rich table: every number visible in wide and narrow consoles."""

from __future__ import annotations

import pytest
from rich.console import Console

from qdeploy.evaluate import ProfileConfig, profile_models
from qdeploy.evaluate.report import HEADERS, render_table


@pytest.mark.parametrize("width", [80, 160])
def test_table_shows_all_columns_without_truncation(float_and_perturbed, width: int) -> None:
    a, b, _, _ = float_and_perturbed
    report = profile_models([a, b], ProfileConfig(warmup=1, iterations=5, threads=1))
    console = Console(width=width, record=True, color_system=None)
    console.print(render_table(report, width=width))
    text = console.export_text()
    assert "…" not in text
    for needle in (*HEADERS[1:], "float.onnx", "perturbed.onnx", "inf", "1.00x", "VNNI"):
        assert needle in text, needle
    assert max(len(line) for line in text.splitlines()) <= width
