"""The documented colcon invocation finds both ROS packages, and the root package installs."""

from __future__ import annotations

import filecmp
import os
import re
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


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``colcon build`` of the root package (no symlinks, as on a robot); its install base."""
    # headpose_msgs comes from the environment's prefix (an underlay), as on a robot where it
    # was built earlier; only the root package is built here.
    work = tmp_path_factory.mktemp("colcon")
    prefix = str(Path(sys.executable).parents[1])
    env = dict(os.environ, COLCON_LOG_PATH=str(work / "log"), AMENT_PREFIX_PATH=prefix)
    result = subprocess.run(
        [
            colcon(),
            "build",
            "--base-paths",
            ".",
            "--packages-select",
            "headpose_ros",
            "--build-base",
            str(work / "build"),
            "--install-base",
            str(work / "install"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.rmtree(work / "build", ignore_errors=True)
    return work / "install" / "headpose_ros"


def test_colcon_builds_the_root_package_with_its_share_files(colcon_install: Path) -> None:
    share = colcon_install / "share"
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


#: colcon's own shell-environment files (sourced by install/setup.bash); scripts/setup.sh's
#: venv sets the one variable they would, AMENT_PREFIX_PATH, in bin/activate instead.
COLCON_ENVIRONMENT_FILES = re.compile(
    r"share/headpose_ros/(hook/.*|package\.(sh|bash|zsh|ps1|dsv))"
)


def _ament_files(prefix: Path) -> set[str]:
    """The package's data files and executables in an ament prefix (index marker included)."""
    roots = [prefix / "share/headpose_ros", prefix / "lib/headpose_ros"]
    files = {
        path.relative_to(prefix).as_posix()
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    found = {f for f in files if not COLCON_ENVIRONMENT_FILES.fullmatch(f)}
    marker = "share/ament_index/resource_index/packages/headpose_ros"
    if (prefix / marker).is_file():
        found.add(marker)
    return found


def test_setup_registration_installs_what_colcon_installs(
    colcon_install: Path, tmp_path: Path
) -> None:
    # scripts/setup.sh's registration (symlinks into the checkout) against a real colcon
    # install: the same files at the same places, with the same contents.
    prefix = tmp_path / "prefix"
    for script in (colcon_install / "lib/headpose_ros").iterdir():
        (prefix / "bin").mkdir(parents=True, exist_ok=True)
        (prefix / "bin" / script.name).write_text("#!/bin/sh\n")  # pip's console script
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts/register_in_ament_index.py"),
            "--prefix",
            str(prefix),
        ],
        check=True,
        capture_output=True,
    )
    registered, installed = _ament_files(prefix), _ament_files(colcon_install)
    assert registered == installed
    for relative in registered:
        if not relative.startswith("lib/"):  # scripts: pip's and colcon's wrappers differ
            assert filecmp.cmp(prefix / relative, colcon_install / relative, shallow=False), (
                relative
            )
