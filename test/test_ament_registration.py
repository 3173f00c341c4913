"""scripts/register_in_ament_index.py: the package registration scripts/setup.sh performs.

Its result is compared with a real colcon install in test_colcon_layout.py; here: it keeps a
prefix current when the checkout changes, a venv's activate script gets AMENT_PREFIX_PATH (and
deactivate restores it), and this test environment, when it is scripts/setup.sh's venv, is
registered so that the ament index finds the checkout's files. Also: package.xml's rosdep keys
and the robot's apt list (requirements/robot-apt.txt) stay in step.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REGISTER = REPO_ROOT / "scripts" / "register_in_ament_index.py"

FAKE_SETUP_PY = """\
from setuptools import setup
setup(
    name="fake_pkg",
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/fake_pkg"]),
        ("share/fake_pkg/launch", ["launch/a.launch.py", "launch/b.launch.py"]),
    ],
    entry_points={"console_scripts": ["fake_node = fake_pkg.node:main"]},
)
"""


def register(source: Path, prefix: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(REGISTER), "--prefix", str(prefix), "--source", str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def fake_checkout(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    for relative, text in {
        "setup.py": FAKE_SETUP_PY,
        "resource/fake_pkg": "",
        "launch/a.launch.py": "a",
        "launch/b.launch.py": "b",
    }.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text)
    return source


def test_links_follow_the_checkout_and_a_second_run_changes_nothing(
    fake_checkout: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "fake_node").write_text("#!/bin/sh\n")

    register(fake_checkout, prefix)
    launch = prefix / "share/fake_pkg/launch"
    assert launch.is_dir() and not launch.is_symlink(), "per-file links (os.walk skips links)"
    assert (launch / "a.launch.py").resolve() == fake_checkout / "launch/a.launch.py"
    assert (prefix / "lib/fake_pkg/fake_node").resolve() == prefix / "bin/fake_node"
    marker = prefix / "share/ament_index/resource_index/packages/fake_pkg"
    assert marker.resolve() == fake_checkout / "resource/fake_pkg"
    (fake_checkout / "launch/a.launch.py").write_text("edited")
    assert (launch / "a.launch.py").read_text() == "edited", "edits are live (symlinks)"
    assert "already current" in register(fake_checkout, prefix)

    # A file dropped from setup.py's data_files loses its link; a user's own file stays.
    (fake_checkout / "setup.py").write_text(FAKE_SETUP_PY.replace(', "launch/b.launch.py"', ""))
    (launch / "mine.launch.py").write_text("not a link")
    output = register(fake_checkout, prefix)
    assert "removed stale link share/fake_pkg/launch/b.launch.py" in output
    assert sorted(p.name for p in launch.iterdir()) == ["a.launch.py", "mine.launch.py"]


def test_missing_console_script_is_reported(fake_checkout: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REGISTER),
            "--prefix",
            str(tmp_path / "p"),
            "--source",
            str(fake_checkout),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "bin/fake_node is missing: install the package (pip install -e) first" in result.stderr


def test_activate_sets_ament_prefix_path_and_deactivate_restores_it(
    fake_checkout: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (venv / "bin" / "fake_node").write_text("#!/bin/sh\n")
    register(fake_checkout, venv)
    register(fake_checkout, venv)  # the hook goes in once
    script = f"""
        source {venv}/bin/activate; echo "active=$AMENT_PREFIX_PATH"
        source {venv}/bin/activate; echo "again=$AMENT_PREFIX_PATH"
        deactivate; echo "after=${{AMENT_PREFIX_PATH-unset}}"
    """
    for before, active, after in [
        (None, f"{venv}", "unset"),
        ("/opt/ros/kilted", f"/opt/ros/kilted:{venv}", "/opt/ros/kilted"),
    ]:
        env = {"PATH": "/usr/bin:/bin"} | ({"AMENT_PREFIX_PATH": before} if before else {})
        lines = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        assert lines == [f"active={active}", f"again={active}", f"after={after}"]


def test_this_environment_finds_the_checkout_through_the_ament_index() -> None:
    prefix = Path(sys.prefix)
    if not (prefix / "share/ament_index/resource_index").is_dir():
        pytest.skip(f"{prefix} is not an ament prefix (not scripts/setup.sh's venv)")
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    assert Path(get_package_prefix("headpose_ros")) == prefix
    share = Path(get_package_share_directory("headpose_ros"))
    for relative in ("launch/headpose.launch.py", "config/headpose.yaml", "models/manifest.json"):
        assert (share / relative).resolve() == REPO_ROOT / relative, relative
    assert (prefix / "lib/headpose_ros/headpose_node").resolve() == prefix / "bin/headpose_node"


def test_package_xml_rosdep_keys_are_the_robot_apt_list() -> None:
    # A robot gets exactly these from apt; pip-only keys (unpinned) are not allowed, because
    # rosdep would install the newest release (mediapipe 1.x lacks the API the detector uses).
    root = ElementTree.parse(REPO_ROOT / "package.xml").getroot()
    keys = {
        element.text
        for element in root
        if element.tag in ("depend", "exec_depend") and element.text.startswith("python3-")
    }
    apt_list = {
        line.split()[0]
        for line in (REPO_ROOT / "requirements/robot-apt.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert keys == apt_list
    assert not [key for key in keys if key.endswith("-pip")]
