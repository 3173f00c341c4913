#!/usr/bin/env bash
# Rehearse the robot install path (README, "On a robot with ROS 2") as closely as a machine
# without an apt ROS allows, and run the core, message and node tests in it:
#   - the distribution's numpy, OpenCV, SciPy, numba, ... from apt (requirements/robot-apt.txt,
#     what package.xml's rosdep keys resolve to; installed here with apt-get when missing and
#     running as root, else the apt-get line is printed);
#   - a venv with --system-site-packages over them (.venv-system) with requirements/robot.txt
#     and requirements/no-deps.txt on top, none of which may replace an apt module;
#   - what differs from a robot: ROS 2 itself comes from the PyPI Kilted wheels (built against
#     numpy 2, run here on the system's numpy 1.x), not from apt; the package is installed
#     editable and registered by scripts/setup.sh instead of `colcon build`.
# Extra arguments go to pytest (e.g. -x, -k NAME).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SYSTEM_PYTHON="${PYTHON:-/usr/bin/python3.11}"

missing=()
while read -r apt_package module; do
  "$SYSTEM_PYTHON" -c "import $module" >/dev/null 2>&1 || missing+=("$apt_package")
done < <(grep -v '^#' "$ROOT/requirements/robot-apt.txt" | grep .)
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[robot-path] apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[robot-path] ERROR: needs the distribution's packages: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

PYTHON="$SYSTEM_PYTHON" "$ROOT/scripts/setup.sh" --system-site-packages
PY="$ROOT/.venv-system/bin/python"
cd "$ROOT"
"$PY" -c '
import sys, cv2, numpy, onnxruntime, mediapipe, scipy, numba
print(f"[robot-path] Python {sys.version.split()[0]}; from the system: numpy {numpy.__version__}, "
      f"OpenCV {cv2.__version__}, SciPy {scipy.__version__}, numba {numba.__version__}; from pip: "
      f"onnxruntime {onnxruntime.__version__}, mediapipe {mediapipe.__version__}")'
exec "$PY" -m pytest test/test_core_*.py test/test_messages_*.py test/test_node_*.py "$@"
