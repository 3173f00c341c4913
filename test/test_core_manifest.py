"""Model manifests load when consistent and fail loudly, naming the file, when not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from headpose_ros.core.crop import Normalisation
from headpose_ros.core.landmarks import IBUG68
from headpose_ros.core.manifest import (
    ModelFile,
    ModelFileError,
    ModelManifest,
    load_manifest,
    sha256_of,
)


def write_model(folder: Path, payload: bytes = b"onnx bytes") -> Path:
    (folder / "mnn.onnx").write_bytes(payload)
    manifest = ModelManifest(
        name="test",
        input_size=128,
        heatmap_size=32,
        landmark_scheme="ibug68",
        normalisation=Normalisation(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        mean_face_mm=tuple(tuple(row) for row in np.arange(68 * 3.0).reshape(68, 3)),
        files={"mnn": ModelFile("mnn.onnx", sha256_of(folder / "mnn.onnx"))},
    )
    path = folder / "manifest.json"
    path.write_text(manifest.to_json())
    return path


def test_round_trip_through_json(tmp_path: Path) -> None:
    manifest, files = load_manifest(write_model(tmp_path))
    assert manifest.scheme is IBUG68
    assert manifest.normalisation.std == (0.25, 0.25, 0.25)
    assert manifest.mean_face_m.shape == (68, 3)
    assert manifest.mean_face_m[1, 0] == pytest.approx(0.003)
    assert files == {"mnn": (tmp_path / "mnn.onnx").resolve()}


def test_face_presence_is_the_models_own_with_the_first_models_values_by_default(
    tmp_path: Path,
) -> None:
    path = write_model(tmp_path)
    data = json.loads(path.read_text())
    data.pop("face_presence", None)  # a manifest written before the thresholds were measured
    path.write_text(json.dumps(data))
    assert load_manifest(path)[0].face_presence == {"min": 65.0, "clear": 80.0}
    data["face_presence"] = {"min": 40.0, "clear": 72.5}
    path.write_text(json.dumps(data))
    assert load_manifest(path)[0].face_presence == {"min": 40.0, "clear": 72.5}


def test_missing_manifest_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="manifest not found.*nowhere.json"):
        load_manifest(tmp_path / "nowhere.json")


def test_missing_model_file_names_the_role_and_file(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    (tmp_path / "mnn.onnx").unlink()
    with pytest.raises(ModelFileError, match="mnn model file .* is missing: .*mnn.onnx"):
        load_manifest(path)


def test_truncated_model_file_fails_the_hash_check(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    (tmp_path / "mnn.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelFileError, match="does not match the hash"):
        load_manifest(path)
    manifest, _ = load_manifest(path, verify_hashes=False)
    assert manifest.name == "test"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(landmark_scheme="wflw98"), "unknown landmark scheme"),
        (lambda d: d.update(mean_face_mm=d["mean_face_mm"][:10]), "mean_face_mm must be 68x3"),
        (lambda d: d.update(input_size=4), "implausible sizes"),
        (lambda d: d.update(format_version=99), "format 99 is not supported"),
        (lambda d: d.update(files={}), "neither an 'mnn' nor an 'encoder'"),
        (lambda d: d["normalisation"].update(std=[1, 0, 1]), "malformed.*std"),
        (lambda d: d.pop("input_size"), "malformed"),
        (lambda d: d.update(face_presence={"min": 90.0, "clear": 80.0}), "0 < min <= clear"),
        (lambda d: d.update(face_presence={"min": 65.0}), "face_presence needs"),
    ],
)
def test_inconsistent_manifests_are_rejected(tmp_path: Path, edit, message: str) -> None:
    path = write_model(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match=message):
        load_manifest(path)


def test_corrupt_json_is_reported_as_such(tmp_path: Path) -> None:
    path = write_model(tmp_path)
    path.write_text(path.read_text()[:50])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_manifest(path)
