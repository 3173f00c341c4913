"""headpose_ros.core must work without ROS and without the layers built on it.

Training and the offline tools depend on that. The check is an allow-list: a core module may
import the standard library, the third-party roots in :data:`CORE_THIRD_PARTY` and other core
modules, nothing else. So a new ROS package (``rcl_interfaces``, ``launch_ros``,
``message_filters``, ...) cannot slip through a list of names to refuse, and neither can the
layers above the core (node, messages, tools), however they are imported: absolutely,
relatively (``from ..messages import``) or by name (``importlib.import_module("rclpy")``).
The node's ROS-free modules are held to the ROS half of the rule.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import headpose_ros.core

PACKAGE_DIR = Path(headpose_ros.core.__file__).parents[1]
CORE_DIR = PACKAGE_DIR / "core"
#: Third-party packages the core may import (runtime dependencies of the ROS-free core).
CORE_THIRD_PARTY = frozenset({"numpy", "cv2", "onnxruntime", "numba", "mediapipe"})
#: Modules outside the core that must not import ROS either (checked with ROS_MARKERS).
ROS_FREE_MODULES = ("headpose_ros.node_support", "headpose_ros.frame_intake")
#: How a ROS module is recognised for ROS_FREE_MODULES (these may import other third parties).
ROS_ROOTS = frozenset(
    {"rclpy", "launch", "launch_ros", "message_filters", "cv_bridge", "ament_index_python"}
)
ROS_PREFIXES = ("rcl", "rosidl", "rosbag2", "tf2", "rmw")
ROS_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
#: Calls that import the module named by their first argument.
IMPORT_CALLS = frozenset({"import_module", "__import__"})


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every module ``source`` imports, as absolute names; "<dynamic>" for a computed name."""
    package = module if is_package else module.rpartition(".")[0]

    def absolute(name: str, level: int) -> str:
        if level == 0:
            return name
        base = package.split(".")
        base = base[: len(base) - (level - 1)] if level > 1 else base
        return ".".join([*base, name] if name else base)

    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node.module or "", node.level)
            names.append(base)
            if node.module is None:  # from .. import messages: each name may be a module
                names += [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else None
            called = function.id if isinstance(function, ast.Name) else called
            if called in IMPORT_CALLS:
                argument = node.args[0] if node.args else None
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    text = argument.value
                    level = len(text) - len(text.lstrip("."))
                    names.append(absolute(text.lstrip("."), level))
                else:
                    names.append("<dynamic>")
    return names


def core_violation(name: str) -> str | None:
    """Why a core module may not import ``name`` (``None`` when it may)."""
    root = name.split(".")[0]
    if name == "<dynamic>":
        return "imports a module whose name is computed: cannot be checked"
    if root == "headpose_ros":
        inside = name == "headpose_ros.core" or name.startswith("headpose_ros.core.")
        return None if inside else "imports a layer above the core"
    if root in sys.stdlib_module_names or root in CORE_THIRD_PARTY:
        return None
    return f"third-party root '{root}' is not in CORE_THIRD_PARTY"


def is_ros(name: str) -> bool:
    root = name.split(".")[0]
    return root in ROS_ROOTS or root.startswith(ROS_PREFIXES) or root.endswith(ROS_SUFFIXES)


def core_offences(source: str, module: str = "headpose_ros.core.example") -> list[str]:
    found = [(name, core_violation(name)) for name in imported_names(source, module)]
    return [f"{name}: {why}" for name, why in found if why]


HOLES = {
    "rcl_interfaces": "from rcl_interfaces.msg import ParameterDescriptor",
    "builtin_interfaces": "import builtin_interfaces.msg",
    "rosidl_runtime_py": "from rosidl_runtime_py import message_to_ordereddict",
    "launch_ros": "import launch_ros.actions",
    "message_filters": "import message_filters",
    "relative messages": "from ..messages import face_array_message",
    "relative package": "from .. import node",
    "import_module": 'import importlib\nimportlib.import_module("rclpy")',
    "bare import_module": 'from importlib import import_module\nimport_module("sensor_msgs.msg")',
    "__import__": '__import__("rclpy.node")',
    "relative import_module": 'importlib.import_module("..tools.common", __package__)',
    "computed name": "importlib.import_module(name)",
    "absolute tools": "from headpose_ros.tools import common",
    "unlisted third party": "import scipy",
}


@pytest.mark.parametrize("hole", sorted(HOLES))
def test_the_check_catches(hole: str) -> None:
    assert core_offences(HOLES[hole]), f"{hole!r} is not caught"


def test_the_check_lets_the_core_import_what_it_may() -> None:
    allowed = (
        "from __future__ import annotations\nimport json, os.path\nimport numpy as np\n"
        "import cv2\nfrom . import crop\nfrom .geometry import euler_to_matrix\n"
        "from headpose_ros.core.manifest import load_manifest\n"
        "from ..core import tracking\nimportlib.import_module('json')\n"
    )
    assert core_offences(allowed) == []


def test_core_sources_import_only_the_standard_library_the_allow_list_and_the_core() -> None:
    offenders, modules = [], 0
    for path in sorted(CORE_DIR.rglob("*.py")):
        name = module_name(path)
        modules += 1
        for imported in imported_names(path.read_text(), name, path.name == "__init__.py"):
            why = core_violation(imported)
            if why:
                offenders.append(f"{path.name}: {imported}: {why}")
    assert modules > 10 and not offenders, offenders


def test_ros_free_support_modules_import_no_ros() -> None:
    for module in ROS_FREE_MODULES:
        path = PACKAGE_DIR.parent / Path(*module.split(".")).with_suffix(".py")
        names = imported_names(path.read_text(), module)
        assert names and not [n for n in names if is_ros(n) or n == "<dynamic>"], module
    assert is_ros("rcl_interfaces.msg") and is_ros("launch_ros") and not is_ros("numpy")


BLOCKER = """
import importlib.abc, sys
sys.path.insert(0, {test_dir!r})
from test_core_has_no_ros import is_ros

class BlockRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if is_ros(name):
            raise ImportError(f"ROS module {{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, BlockRos())
import pkgutil, importlib, headpose_ros.core as core
modules = [m.name for m in pkgutil.walk_packages(core.__path__, "headpose_ros.core.")]
for name in modules:
    importlib.import_module(name)
above = sorted(m for m in sys.modules if m.split(".")[:2] not in (["headpose_ros"],
               ["headpose_ros", "core"]) and m.startswith("headpose_ros"))
assert not above, f"the core loaded layers above it: {{above}}"
for name in {ros_free!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if is_ros(m))
assert not loaded, loaded
print(len(modules))
"""


def test_every_core_module_imports_with_ros_made_unimportable() -> None:
    expected = len(list(pkgutil.walk_packages(headpose_ros.core.__path__)))
    script = BLOCKER.format(test_dir=str(Path(__file__).parent), ros_free=ROS_FREE_MODULES)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) == expected > 0
