"""The analysis report as a reader sees it: report.html laid out on pages (WeasyPrint) and rasterized (PDFium).

Checks what the page claims: the headline sections are on a page, nothing runs off the right edge of a
page (the wide sensitivity table once did), and the plots are visible in the rendered pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qdeploy.analyze.report import KIND_COLORS, legend, write_analysis_report
from qdeploy.evaluate.render import render_html_to_png, renderer_available

pytestmark = pytest.mark.skipif(not renderer_available(), reason="WeasyPrint (with Pango) / pypdfium2 missing")

#: Rendered plot pixels in an exact bar colour; a page of plots has tens of thousands.
MIN_BAR_PIXELS = 2000


def _page_overflow(pdf_path: Path) -> list[str]:
    """Characters whose box ends beyond their page's right edge (text a reader cannot see)."""
    import pypdfium2 as pdfium

    cut = []
    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        for page in pdf:
            width = page.get_width()
            text = page.get_textpage()
            for i in range(text.count_chars()):
                if text.get_charbox(i)[2] > width + 0.5:
                    cut.append(text.get_text_range(i, 1))
    finally:
        pdf.close()
    return cut


def test_rendered_report_shows_tables_and_plots(tmp_path: Path, w4a4_searched) -> None:
    import weasyprint

    result, plan = w4a4_searched
    command = "qdeploy analyze model.onnx model.w4a4.qdq.onnx --data heldout/ --report report"
    source = {"float model": "model.onnx", "QDQ model": "model.w4a4.qdq.onnx", "data": "heldout/ (3 samples)",
              "command": command}
    write_analysis_report(result, tmp_path / "report", plan, 20, source)
    html = tmp_path / "report" / "report.html"
    rendered = render_html_to_png(html, tmp_path / "pages")
    text = " ".join(" ".join(rendered.text).split())  # a wrapped line reads as one
    for claim in ("Most harmful tensors", "Precision map", result.tensors[0].name, "output SQNR",
                  "qdeploy analyze: model.w4a4.qdq.onnx", "float model: model.onnx", "data: heldout/ (3 samples)",
                  f"command: {command}"):
        assert claim in text, claim
    for name, meaning in legend(result):  # every column explained on the page, in the words of the code
        assert f"{name}: {meaning}" in text, name
    assert {name for name, _ in legend(result)} >= {"local dB", "only-quantized out dB", "contribution",
                                                     "(all switches off: ...)"}
    pdf = tmp_path / "report.pdf"
    weasyprint.HTML(filename=str(html)).write_pdf(str(pdf))
    assert _page_overflow(pdf) == []
    bar_pixels = 0
    for png in rendered.pages:
        rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
        for color in KIND_COLORS.values():
            target = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
            bar_pixels += int(np.count_nonzero(np.all(np.abs(rgb - target) <= 8, axis=-1)))
    assert bar_pixels > MIN_BAR_PIXELS, bar_pixels
