#!/usr/bin/env bash
# Set everything up (scripts/setup.sh --training) and run the whole test suite:
# the headpose_ros tests (test/, style checks included) and the training package's tests.
# Where ../shared/ros2-python-tools is present (development machines, CI), setup also installs
# launch, launch_testing and the ros2 command for the launch and ros2 command-line tests;
# without it those tests skip, saying why.
# Extra arguments go to both pytest runs (e.g. -x, -k NAME).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
setup_args=(--training)
if [[ -x "$ROOT/../shared/ros2-python-tools/install.sh" ]]; then setup_args+=(--ros2-tools); fi
"$ROOT/scripts/setup.sh" "${setup_args[@]}"
PY="$ROOT/.venv/bin/python"
cd "$ROOT"
status=0
"$PY" -m pytest "$@" || status=$?
"$PY" -m pytest training/tests -c training/pytest.ini --rootdir training "$@" || status=$?
exit "$status"
