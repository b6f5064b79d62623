#!/usr/bin/env bash
# First command of the README: set everything up, then run the end-to-end demo on the bundled
# ABPN x3 model and bundled images (no network, no ../shared needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec .venv/bin/qdeploy demo "$@"
