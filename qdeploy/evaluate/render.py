"""Render a self-contained HTML report to PNG pages, to look at it the way a reader would.

Why not a browser: none can be installed on our machines (Chromium/Firefox builds for Playwright or
Selenium download from vendor CDNs, which are unreachable). WeasyPrint is a headless HTML/CSS layout
engine on PyPI (it needs the system's Pango); it lays the page out to PDF and pypdfium2 (PDFium, the
renderer of Chromium's PDF viewer, shipped in its wheel) rasterizes the pages. Both are optional
(``pip install qdeploy[render]``) and imported lazily. The PDF's text layer also lets a test check that
the words the report claims to show are really laid out on a page, not just present in the HTML source.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qdeploy.errors import InputError

__all__ = ["RenderedReport", "render_html_to_png", "renderer_available"]


@dataclass(frozen=True)
class RenderedReport:
    """The PNG file of every page and the text a reader sees on each page."""

    pages: list[Path]
    text: list[str]


def renderer_available() -> bool:
    """Whether WeasyPrint (with the system's Pango) and pypdfium2 import here."""
    try:
        import pypdfium2  # noqa: F401
        import weasyprint  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def render_html_to_png(html_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                       dpi: int = 96) -> RenderedReport:
    """Lay ``html_path`` out on A4-width pages and write ``page-N.png`` files into ``out_dir``."""
    if not renderer_available():
        raise InputError("rendering HTML needs WeasyPrint (and the system's Pango) and pypdfium2",
                         "pip install 'qdeploy[render]' (on Debian/Ubuntu also: apt install libpango-1.0-0)")
    import pypdfium2 as pdfium
    import weasyprint

    html_path, out_dir = Path(html_path), Path(out_dir)
    if not html_path.is_file():
        raise InputError(f"report {html_path} does not exist", "write it first (e.g. qdeploy analyze --report DIR)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pdf_path = Path(tmp) / "report.pdf"
        weasyprint.HTML(filename=str(html_path)).write_pdf(str(pdf_path))
        pdf = pdfium.PdfDocument(str(pdf_path))
        pages, text = [], []
        try:
            for i, page in enumerate(pdf):
                png = out_dir / f"page-{i + 1}.png"
                page.render(scale=dpi / 72).to_pil().save(png)
                pages.append(png)
                text.append(page.get_textpage().get_text_range())
        finally:
            pdf.close()
    return RenderedReport(pages, text)
