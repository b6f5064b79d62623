"""Render a qdeploy report.html to PNG pages and print the page files, to look at it as a reader would.

    python scripts/render_report.py exports/abpn/mixed/report.html exports/abpn/mixed/pages

Needs the optional renderer: pip install 'qdeploy[render]' (WeasyPrint + pypdfium2; see qdeploy.evaluate.render).
"""

from __future__ import annotations

import sys

from qdeploy.evaluate.render import render_html_to_png

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for page in render_html_to_png(sys.argv[1], sys.argv[2]).pages:
        print(page)
