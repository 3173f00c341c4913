"""Shared parts of the launch tests (``test_launch*.py``) and the ``ros2`` command-line tests.

They need the ROS 2 launch, launch_testing and ros2cli Python tools. On a ROS 2 install those
come with ROS. The PyPI wheels of ``scripts/setup.sh``'s venv have none of them: there
``scripts/setup.sh --ros2-tools`` installs their upstream sources from
``../shared/ros2-python-tools`` (development machines; ``scripts/test.sh`` does it whenever
``../shared`` is present). Importing this module skips the importing test module, with that
reason, when the tools are absent.

The launch file is always the *installed* one, found through the ament index as ``ros2 launch
headpose_ros headpose.launch.py`` finds it, so these tests also prove the package registration
(``scripts/register_in_ament_index.py``, or a colcon install on a robot).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MISSING_TOOLS = (
    "the ROS 2 launch/launch_testing/ros2cli tools are not installed: they come with a ROS 2 "
    "install; in scripts/setup.sh's PyPI-wheel venv, 'scripts/setup.sh --ros2-tools' installs "
    "them from ../shared/ros2-python-tools (development machines only; absent here)"
)
for _module in ("launch", "launch_ros", "launch_testing", "ros2cli"):
    pytest.importorskip(_module, reason=MISSING_TOOLS)

import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from node_harness import Probe  # noqa: E402
from rclpy.context import Context  # noqa: E402

__all__ = [
    "MISSING_TOOLS",
    "headpose_launch",
    "lifecycle_state",
    "probe_on",
    "ros2",
    "ros2_until",
    "start_ros2",
]

PACKAGE = "headpose_ros"


def headpose_launch(arguments: dict[str, str]) -> IncludeLaunchDescription:
    """The installed ``headpose.launch.py`` with ``name:=value`` launch arguments."""
    source = PythonLaunchDescriptionSource(
        PathJoinSubstitution([FindPackageShare(PACKAGE), "launch", "headpose.launch.py"])
    )
    return IncludeLaunchDescription(source, launch_arguments=arguments.items())


@contextlib.contextmanager
def probe_on(namespace: str, image_topic: str) -> Iterator[Probe]:
    """A probe node in its own rclpy context (launch tests run outside pytest's fixtures)."""
    context = Context()
    rclpy.init(context=context)
    probe = Probe(context, namespace=namespace, image_topic=image_topic)
    try:
        yield probe
    finally:
        probe.close()
        context.try_shutdown()


def lifecycle_state(probe: Probe, node_name: str, timeout: float = 30.0) -> str:
    """The lifecycle state label of ``node_name``, asked through its ``get_state`` service."""
    client = probe.node.create_client(GetState, f"{node_name}/get_state")
    try:
        assert probe.spin_until(client.service_is_ready, timeout), f"no {node_name}/get_state"
        future = client.call_async(GetState.Request())
        assert probe.spin_until(future.done, timeout), f"{node_name}/get_state did not answer"
        return future.result().current_state.label
    finally:
        probe.node.destroy_client(client)


def _ros2_executable() -> str:
    beside_python = Path(sys.executable).with_name("ros2")
    found = str(beside_python) if beside_python.exists() else shutil.which("ros2")
    if found is None:
        pytest.skip(MISSING_TOOLS)
    return found


def ros2(*arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one ``ros2`` command in the test's DDS environment (set up by conftest.py)."""
    return subprocess.run(
        [_ros2_executable(), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def _ros2_repeated(
    arguments: tuple[str, ...], done: Callable[[str], bool], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a ``ros2`` command again every 0.5 s until ``done(output)`` or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = ros2(*arguments)
        if done(result.stdout + result.stderr) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def ros2_at_node(*arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a ``ros2`` command addressed to a node, again while it answers "Node not found".

    Without the daemon each command discovers the graph afresh within its ``--spin-time``; on a
    loaded machine that can miss a node that is there, and the command then did nothing, so
    repeating it is safe.
    """
    return _ros2_repeated(arguments, lambda output: "Node not found" not in output, timeout)


def ros2_until(expected: str, *arguments: str, timeout: float = 120.0) -> str:
    """Repeat a ``ros2`` query until its output contains ``expected`` (discovery takes a while).

    Returns the last output; the caller asserts on it, so a miss shows what was printed.
    """
    result = _ros2_repeated(arguments, lambda output: expected in output, timeout)
    return result.stdout + result.stderr


def start_ros2(*arguments: str, log: Path) -> subprocess.Popen[str]:
    """Start a long-running ``ros2`` command in its own session (so Ctrl-C can be mimicked)."""
    with log.open("w") as output:
        return subprocess.Popen(
            [_ros2_executable(), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
