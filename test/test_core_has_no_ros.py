"""headpose_ros.core must work without ROS: training and offline tools depend on that."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import headpose_ros.core

CORE_DIR = Path(headpose_ros.core.__file__).parent
ROS_ROOTS = ("rclpy", "rosidl", "rosbag2", "ament_index_python", "cv_bridge", "tf2_ros", "launch")


def is_ros_module(name: str) -> bool:
    root = name.split(".")[0]
    return root in ROS_ROOTS or root.endswith("_msgs") or root.endswith("_srvs")


def test_core_sources_import_no_ros_module() -> None:
    offenders = []
    for path in sorted(CORE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {name}" for name in names if is_ros_module(name)]
    assert not offenders, offenders


BLOCKER = """
import importlib.abc, sys
ROS_ROOTS = {roots!r}

class BlockRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = name.split(".")[0]
        if root in ROS_ROOTS or root.endswith("_msgs") or root.endswith("_srvs"):
            raise ImportError(f"ROS module {{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockRos())
import pkgutil, importlib, headpose_ros.core as core
modules = [m.name for m in pkgutil.walk_packages(core.__path__, "headpose_ros.core.")]
for name in modules:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ROS_ROOTS or m.endswith("_msgs"))
assert not loaded, loaded
print(len(modules))
"""


def test_every_core_module_imports_with_ros_made_unimportable() -> None:
    expected = len(list(pkgutil.walk_packages(headpose_ros.core.__path__)))
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER.format(roots=ROS_ROOTS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) == expected > 0
