#!/usr/bin/env bash
# Second command of the README: set up with the dev extras, then run the test suite
# (slow/GPU/TensorRT checks are behind markers: add e.g. -m slow to run them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
exec .venv/bin/python -m pytest "$@"
