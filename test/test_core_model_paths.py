"""Default model folder lookup: ament prefix, Python prefix, then the source tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from headpose_ros.core import model_paths


def test_sourced_workspace_share_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "headpose_ros").touch()
    models = prefix / "share" / "headpose_ros" / "models"
    models.mkdir(parents=True)
    (models / "manifest.json").write_text("{}")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{tmp_path / 'other'}:{prefix}")
    assert model_paths.default_model_dir() == models
    assert model_paths.resolve_model_dir("") == models
    assert model_paths.resolve_model_dir(str(tmp_path)) == tmp_path


def test_falls_back_to_the_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")
    found = model_paths.default_model_dir()
    assert found.name == "models"
    repo_models = Path(model_paths.__file__).resolve().parents[2] / "models"
    assert found == repo_models or (found / "manifest.json").is_file()
