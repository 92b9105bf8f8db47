#!/usr/bin/env bash
# One-shot set-up on a fresh machine (Python >= 3.10 only): a virtual environment in .venv with torch, robaug
# and its extras (ROBAUG_EXTRAS, default test,recipes), plus Fashion-MNIST from Debian's package when we are root.
# robaug goes in as users get it: a wheel built from this checkout (so the tests, run by scripts/test.sh, check what
# the wheel ships); ROBAUG_EDITABLE=1 installs the checkout in editable mode instead, for development.
# Idempotent: re-running it only checks what is there and reinstalls robaug. Override the torch pin with TORCH_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip_q() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  # shellcheck disable=SC2086
  pip_q $TORCH_SPEC
fi
EXTRAS=${ROBAUG_EXTRAS:-test,recipes}
if [ "${ROBAUG_EDITABLE:-0}" = "1" ]; then
  pip_q -e ".[$EXTRAS]"
  echo editable > "$VENV/robaug-install-mode"
else
  rm -rf build/wheel && mkdir -p build/wheel
  "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps -w build/wheel .
  WHEEL=$(ls build/wheel/robaug-*.whl)
  pip_q --force-reinstall --no-deps "$WHEEL"
  pip_q "$WHEEL[$EXTRAS]"
  echo wheel > "$VENV/robaug-install-mode"
fi

# Real data for the demo, recipes and integration tests.
if ! "$VENV/bin/python" -c "from robaug.data import find_fashion_mnist as f; import sys; sys.exit(f() is None)"; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null
  else
    echo "Fashion-MNIST not found; as root run: apt-get install -y dataset-fashion-mnist" >&2
    echo "(or see the error printed by 'robaug demo' for other ways to get it)" >&2
  fi
fi
echo "robaug set-up done: $("$VENV/bin/python" -c 'import robaug, torch; print("robaug", robaug.__version__, "torch", torch.__version__)')"
