"""The documented colcon invocation finds both ROS packages, and the root package installs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The base paths the README documents; colcon stops descending at the root package.
BASE_PATHS = [".", "headpose_msgs"]


def colcon() -> str:
    found = Path(sys.executable).with_name("colcon")
    if not found.exists():
        pytest.skip("colcon is not installed in this environment (scripts/setup.sh installs it)")
    return str(found)


def test_colcon_lists_both_packages_and_not_training() -> None:
    result = subprocess.run(
        [colcon(), "list", "--names-only", "--base-paths", *BASE_PATHS],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(result.stdout.split()) == ["headpose_msgs", "headpose_ros"]


def test_colcon_builds_the_root_package_with_its_share_files(tmp_path: Path) -> None:
    # headpose_msgs comes from the environment's prefix (an underlay), as on a robot where it
    # was built earlier; only the root package is built here.
    prefix = str(Path(sys.executable).parents[1])
    env = dict(os.environ, COLCON_LOG_PATH=str(tmp_path / "log"), AMENT_PREFIX_PATH=prefix)
    result = subprocess.run(
        [
            colcon(),
            "build",
            "--base-paths",
            ".",
            "--packages-select",
            "headpose_ros",
            "--build-base",
            str(tmp_path / "build"),
            "--install-base",
            str(tmp_path / "install"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    share = tmp_path / "install" / "headpose_ros" / "share"
    assert (share / "ament_index/resource_index/packages/headpose_ros").is_file()
    assert (share / "headpose_ros/package.xml").is_file()
    installed = {
        p.relative_to(share / "headpose_ros").as_posix()
        for p in (share / "headpose_ros").rglob("*")
    }
    for folder in ("launch", "config", "models"):
        expected = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / folder).glob("*")}
        expected = {p for p in expected if not p.endswith((".pyc", "__pycache__"))}
        assert expected <= installed, f"{folder}: missing {sorted(expected - installed)}"
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
