#!/usr/bin/env bash
# Create (or reuse) .venv and install qdeploy into it. Usage: bash scripts/setup.sh [EXTRAS]
# torch is pinned to 2.13.0 first: on this project's machines that is a CPU build available locally,
# and an unpinned torch can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v -i "warning" || true
.venv/bin/python -m pip install -q -e ".[${extras}]" 2>&1 | grep -v -i "warning" || true
.venv/bin/python -c "import qdeploy, qdeploy_cli, qdeploy_models, torch, onnxruntime" \
  || { echo "setup failed: qdeploy did not import; see pip output above" >&2; exit 1; }
