#!/usr/bin/env bash
# Set everything up (scripts/setup.sh --training) and run the whole test suite:
# the headpose_ros tests (test/, style checks included) and the training package's tests.
# Extra arguments go to both pytest runs (e.g. -x, -k NAME).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" --training
PY="$ROOT/.venv/bin/python"
cd "$ROOT"
status=0
"$PY" -m pytest "$@" || status=$?
"$PY" -m pytest training/tests -c training/pytest.ini --rootdir training "$@" || status=$?
exit "$status"
