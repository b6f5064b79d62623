#!/usr/bin/env bash
# Create (or reuse) .venv and install qdeploy into it. Usage: bash scripts/setup.sh [EXTRAS]
# torch is pinned to 2.13.0 first: on this project's machines that is a CPU build available locally,
# and an unpinned torch can pull a multi-GB CUDA build.
# One line per step, so a long pip run is never silent; pip's own output goes to .venv/setup.log and is
# shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo}"
py="${PYTHON:-python3}"
torch_version="2.13.0"
log=".venv/setup.log"

# step REQUIRED "what" CMD...: print "what ... done (N s)"; on failure show the log's tail and, when
# REQUIRED is 1, stop (a failed pip self-upgrade, e.g. offline, is not worth stopping for).
step() {
  local required="$1" what="$2" start=$SECONDS
  shift 2
  printf '%s ... ' "$what"
  if "$@" >>"$log" 2>&1; then
    echo "done ($((SECONDS - start)) s)"
  elif [ "$required" = 1 ]; then
    echo "FAILED"
    echo "--- last lines of $log ---" >&2
    tail -n 40 "$log" >&2
    exit 1
  else
    echo "skipped (see $log)"
  fi
}

if [ ! -x .venv/bin/python ]; then
  printf 'creating .venv with %s ... ' "$py"
  "$py" -m venv .venv
  echo "done"
fi
: >"$log"
pip=(.venv/bin/python -m pip install --disable-pip-version-check)
step 0 "upgrading pip" "${pip[@]}" --upgrade pip
if .venv/bin/python -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" \
    >/dev/null 2>&1; then
  echo "torch $torch_version already installed"
else
  step 1 "installing torch $torch_version (CPU; a few minutes on a fresh venv)" "${pip[@]}" "torch==$torch_version"
fi
step 1 "installing qdeploy[$extras] and its dependencies (editable; can take minutes)" "${pip[@]}" -e ".[${extras}]"
step 1 "checking that qdeploy imports" \
  .venv/bin/python -c "import qdeploy, qdeploy_cli, qdeploy_models, torch, onnxruntime"
