"""Style checks, as ament_flake8 + ament_pep257 would run them, through ruff (ruff.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def ruff_command() -> list[str]:
    venv_ruff = Path(sys.executable).with_name("ruff")
    found = str(venv_ruff) if venv_ruff.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed (scripts/setup.sh installs it)")
    return [found]


def test_ruff_lint_passes_on_the_whole_repository() -> None:
    result = subprocess.run(
        [*ruff_command(), "check", "--no-cache", "--output-format", "concise", "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
