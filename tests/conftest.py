"""Suite-wide settings."""

from __future__ import annotations

import os

# rich wraps at the terminal width (80 columns without a terminal); CLI tests look for whole lines that
# contain temporary paths, whose length depends on pytest's temp folder numbering. A wide console keeps
# those checks about the content, not about where rich happened to break a line.
os.environ["COLUMNS"] = "200"
