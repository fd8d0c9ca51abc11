#!/usr/bin/env bash
# Set up .venv with sedviz, its notebook stack and its test tools; safe to run again.
#   TORCH_SPEC  which torch to install when the venv has none (default torch==2.13.0, which on
#               this project's CPU machines comes from local disk; elsewhere pick your own build)
#   SEDVIZ_BROWSER=0  skip installing Chromium (only the browser tests need it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    "${PIP[@]}" install "${TORCH_SPEC:-torch==2.13.0}"
fi
"${PIP[@]}" install -e ".[all]" 2> >(grep -v "is ignored" >&2)
if [ "${SEDVIZ_BROWSER:-1}" != 0 ] && [ ! -x /usr/bin/chromium ]; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo")
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "sedviz is set up in .venv ($(.venv/bin/python -c 'import sedviz, torch; print("sedviz", sedviz.__version__, "torch", torch.__version__)'))"
