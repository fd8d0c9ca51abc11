#!/usr/bin/env bash
# Set up, then run the whole test suite (notebooks and a real browser included).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# torchvision models for tests/test_torchvision.py are built in a second venv (see the script)
bash scripts/torchvision_venv.sh || { echo "could not set up .venv-torchvision" >&2; [ -n "${CI:-}" ] && exit 1; }
# One BLAS/OpenMP pool per process: numpy's and torch's threads together oversubscribe small machines.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}
.venv/bin/python -m pytest -ra "$@"
rc=$?
if [ $rc -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit $rc
