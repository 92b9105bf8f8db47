#!/usr/bin/env bash
# The test suite, against the robaug installed in .venv (by scripts/setup.sh: the wheel built from this checkout),
# not against the source tree: pytest runs from an empty folder so that the checkout's robaug/ cannot shadow the
# installed package. Arguments go to pytest (default: -n 2 --durations=15).
#   bash scripts/setup.sh && bash scripts/test.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
[ -x "$VENV/bin/python" ] || { echo "no $VENV: run bash scripts/setup.sh first" >&2; exit 2; }
if [ "$#" -eq 0 ]; then set -- -n 2 --durations=15; fi
if [ "$(cat "$VENV/robaug-install-mode" 2>/dev/null)" = "wheel" ]; then
  export ROBAUG_EXPECT_INSTALLED=1   # tests/test_installed.py checks robaug really comes from the wheel
fi
RUN_DIR=$(mktemp -d)
trap 'rm -rf "$RUN_DIR"' EXIT
cd "$RUN_DIR"
"$VENV/bin/python" -m pytest -c "$REPO/pyproject.toml" --rootdir "$REPO" -p no:cacheprovider "$@" "$REPO/tests"
