"""Fixtures of the training suite: the development data (skipping when absent) and small runs.

Torch is limited to one thread: the machines running the suite share their few cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from headpose_ros.core.landmarks import IBUG68

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT.parent / "shared"

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_300w() -> Path:
    """The real 300-W subset in ../shared; skips the test on a clone without it."""
    path = SHARED_DIR / "data" / "300w_subset"
    if not (path / "helen_test").is_dir():
        pytest.skip(f"needs the 300-W subset at {path} (development data, not shipped)")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root laid out as ../shared/data, with a few real faces per split.

    ``300w_subset/`` has a handful of faces in each 300-W folder, ``aflw_crops/`` 48 AFLW crops
    spread over the yaw range (its ``labels.json`` rewritten for them), so end-to-end runs take
    seconds but exercise both sources, the duplicate grouping and the yaw bins.
    """
    source = SHARED_DIR / "data"
    if (
        not (source / "300w_subset" / "helen_test").is_dir()
        or not (source / "aflw_crops" / "labels.json").is_file()
    ):
        pytest.skip(f"needs the 300-W subset and AFLW crops in {source} (development data)")
    root = tmp_path_factory.mktemp("data")
    counts = (("helen_train", 6), ("afw", 4), ("lfpw_train", 4), ("helen_test", 3))
    for split, count in counts:
        (root / "300w_subset" / split).mkdir(parents=True)
        for pts in sorted((source / "300w_subset" / split).glob("*.pts"))[:count]:
            shutil.copy(pts, root / "300w_subset" / split / pts.name)
            image = pts.with_suffix(".jpg")
            shutil.copy(image, root / "300w_subset" / split / image.name)
    entries = json.loads((source / "aflw_crops" / "labels.json").read_text())
    chosen = []
    for low, high in ((0, 30), (30, 60), (60, 100)):
        chosen += [e for e in entries if low <= abs(e["yaw_deg"]) < high][:16]
    (root / "aflw_crops" / "images").mkdir(parents=True)
    for entry in chosen:
        shutil.copy(source / "aflw_crops" / entry["image"], root / "aflw_crops" / entry["image"])
    (root / "aflw_crops" / "labels.json").write_text(json.dumps(chosen))
    return root


@pytest.fixture
def synthetic_face() -> np.ndarray:
    """A symmetric 68-point face in the head frame, metres (x forward, y left, z up).

    Random but with the iBUG semantics the mean-face code relies on: mirror pairs mirrored,
    outer eye corners 90 mm apart, nose tip in front, mouth straight below the eyes.
    """
    rng = np.random.default_rng(1)
    face = rng.uniform([-0.06, -0.07, -0.1], [0.05, 0.07, 0.03], size=(68, 3))
    face[36], face[45] = [0.0, -0.045, 0.0], [0.0, 0.045, 0.0]
    face[30] = [0.05, 0.0, -0.035]
    face = (face + face[list(IBUG68.flip_permutation)] * [1, -1, 1]) / 2.0
    origin = (face[36:42].mean(axis=0) + face[42:48].mean(axis=0)) / 2.0
    x0 = origin[0]
    face[[48, 54, 57]] = [[x0, -0.025, -0.07], [x0, 0.025, -0.07], [x0, 0.0, -0.08]]
    return face - origin


TINY_RUN = {
    "name": "tiny",
    "model": {"input_size": 32, "stem_stride": 2, "channels": [8, 8, 12, 12, 16]},
    "schedule": "pre+sym",
    "val_fraction": 0.3,
    "batch_size": 4,
    "samples_per_epoch": 16,
    "pretrain_epochs": 1,
    "epochs": 2,
    "mean_face_iterations": 1,
    "mean_face_aflw_faces": 30,
    "threads": 1,
}


@pytest.fixture(scope="session")
def tiny_config():
    """Configuration of the tiny run: a small network, one pre-training and one Sym epoch."""
    from headpose_training.config import TrainConfig

    return TrainConfig.from_dict(TINY_RUN)


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run on a few real faces (shared by the tests: copy it before changing it)."""
    from headpose_training.train import train

    root = tmp_path_factory.mktemp("tiny_run")
    return train(tiny_config, root / "run", tiny_data, root / "cache")


@pytest.fixture(scope="session")
def tiny_export_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run exported (ONNX + manifest), read-only for the tests."""
    from headpose_training.export import export_checkpoint

    return export_checkpoint(tiny_run, tmp_path_factory.mktemp("tiny_export") / "export").parent


@pytest.fixture
def tiny_export(tiny_export_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny export; returns its manifest path."""
    copy = shutil.copytree(tiny_export_dir, tmp_path / "export")
    return copy / "manifest.json"
