#!/usr/bin/env bash
# A second venv, .venv-torchvision, in which the tests build torchvision models and save them with
# torch.save and safetensors (tests/torchvision_models.py). Why a second one: PyPI's torchvision
# builds do not load beside the CPU torch build of .venv ("operator torchvision::nms does not
# exist"), and there is no CPU torchvision wheel for it; a matching torch + torchvision pair in its
# own venv runs fine on the CPU. sedviz itself never imports torchvision. Reused when present.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-torchvision
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torchvision, safetensors" 2>/dev/null; then
    exit 0
fi
PY=${PYTHON:-python3}
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip --disable-pip-version-check -q install \
    "${TORCHVISION_TORCH_SPEC:-torch==2.14.1}" "${TORCHVISION_SPEC:-torchvision==0.29.1}" safetensors \
    2> >(grep -v "is ignored" >&2)
"$VENV/bin/python" -c "import torchvision; print('torchvision', torchvision.__version__, 'is set up in $VENV')"
