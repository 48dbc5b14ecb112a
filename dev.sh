#!/usr/bin/env bash
# One entry point for people and CI: sets up .venv from pinned constraints, then runs a command.
#   ./dev.sh run [PACK]   run a pack end to end on the embedded default (demo pack if none given)
#   ./dev.sh test         the test suite, exactly as CI runs it
#   ./dev.sh lint         ruff + mypy
set -euo pipefail
cd "$(dirname "$0")"
VENV=${STABLENEW_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
  local stamp="$VENV/.stablenew-installed"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
    touch "$stamp"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  run)
    setup
    exec "$VENV/bin/stablenew" run "${@:-configs/packs/demo.yaml}"
    ;;
  test)
    setup
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  lint)
    setup
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
    ;;
  *)
    echo "usage: ./dev.sh run [PACK] | test [PYTEST ARGS] | lint" >&2
    exit 2
    ;;
esac
