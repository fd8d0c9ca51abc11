#!/usr/bin/env bash
# Refresh docs/screenshots/ on purpose: run the browser tests with their screenshots sent there
# (the tests themselves write only into temporary folders). Needs scripts/setup.sh's Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEDVIZ_SCREENSHOTS="$PWD/docs/screenshots"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
.venv/bin/python -m pytest -q tests/test_browser.py tests/test_jupyterlab.py "$@"
git status --short docs/screenshots
