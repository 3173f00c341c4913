"""Shared pytest fixtures: loopback-only DDS on a per-run domain, ROS contexts, shared data.

The DDS settings are applied when pytest configures itself, before any test imports rclpy, and
are inherited by every subprocess a test starts (nodes, peers), so no test traffic leaves the
loopback interface and parallel runs on one machine never see each other's topics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import settings

from headpose_ros.dds_profile import use_large_image_profile

# Property tests check results, never speed (benchmarks measure that): without a deadline a
# busy CI machine or a first call's lazy imports cannot fail them.
settings.register_profile("headpose", deadline=None)
settings.load_profile("headpose")

# Model fixtures (model_dir: shipped or tiny synthetic model; trained_model_dir) for every test.
pytest_plugins = ["model_factory"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
# Fast DDS with default ports allows domain ids 0-101 on one host; 0 is everyone's default.
_DOMAIN_RANGE = 100


def pytest_configure(config: pytest.Config) -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated twin; the range above rules
    domain = os.environ.get("HEADPOSE_TEST_DOMAIN_ID") or str(1 + os.getpid() % _DOMAIN_RANGE)
    os.environ["ROS_DOMAIN_ID"] = domain
    config.stash[_domain_key] = domain
    # Test peers publish images too: the same shared-memory profile as the node's processes.
    config.stash[_profile_key] = use_large_image_profile()
    _add_this_environment_to_ament_prefix_path()


def _add_this_environment_to_ament_prefix_path() -> None:
    """Let ros2/launch find packages registered in this Python's prefix (scripts/setup.sh's venv).

    The venv's ``bin/activate`` does the same; tests must not depend on it having been sourced.
    Appended, so a sourced ROS workspace keeps precedence; a prefix without an ament index (a
    system Python on a robot) is left out.
    """
    if not (Path(sys.prefix) / "share" / "ament_index" / "resource_index").is_dir():
        return
    paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in paths:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([*paths, sys.prefix])


_domain_key = pytest.StashKey[str]()
_profile_key = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"DDS: ROS_DOMAIN_ID={config.stash[_domain_key]}, "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; {config.stash[_profile_key]}; "
        f"shared data: {SHARED_DIR if SHARED_DIR.is_dir() else 'absent (tests needing it skip)'}"
    )


@pytest.fixture
def ros_context() -> Iterator[object]:
    """A fresh rclpy context for one test, shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture
def shared_dir() -> Path:
    """The development-only ../shared folder; skips the test on a user's clone without it."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"needs ../shared beside the repository ({SHARED_DIR} is absent)")
    return SHARED_DIR


@pytest.fixture
def data_300w(shared_dir: Path) -> Path:
    """The real 300-W subset (HELEN train/test, AFW) from ../shared."""
    path = shared_dir / "data" / "300w_subset"
    if not (path / "helen_test").is_dir():
        pytest.skip(f"needs the 300-W subset at {path}")
    return path


@pytest.fixture
def aflw_off_centre_frame(shared_dir: Path) -> Callable[[str], np.ndarray]:
    """Frame maker: an AFLW crop scaled x2 with its face box at (40, 40, 280, 280) of 720x320.

    The 400 px of replicated border on the right put the face off-centre, so that a box found
    in the mirror image and not mapped back would miss it. Skips when the crop is absent.
    """

    def frame(crop: str) -> np.ndarray:
        path = shared_dir / "data" / "aflw_crops" / "images" / crop
        if not path.is_file():
            pytest.skip(f"needs the AFLW crops at {path.parent}")
        face = cv2.resize(cv2.imread(str(path)), None, fx=2.0, fy=2.0)
        return cv2.copyMakeBorder(face, 40, 40, 40, 400, cv2.BORDER_REPLICATE)

    return frame


@pytest.fixture
def spawn_python() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start Python subprocesses that inherit the test DDS settings; all are stopped after."""
    processes: list[subprocess.Popen[str]] = []

    def spawn(*args: str, **kwargs: object) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            **kwargs,  # type: ignore[arg-type]
        )
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def spin_until(node: object, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin ``node`` until ``condition()`` holds or ``timeout`` seconds pass; return which."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            executor.spin_once(timeout_sec=0.05)
        return condition()
    finally:
        executor.remove_node(node)
        executor.shutdown()
