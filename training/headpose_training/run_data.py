"""The data of a training run: every source split by photograph, the mean 3D face, pose labels.

Shared by training (:func:`prepare_data`) and by the evaluation, which finds a run's held-out
faces and mean face again from its config alone when the checkpoint is not at hand
(:func:`split_sources`, :func:`cached_mean_face`): the split is seeded and the mean-face fit
deterministic.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headpose_ros.core.crop import apply_affine, crop_affine
from headpose_training.config import TrainConfig
from headpose_training.faces import (
    FaceSet,
    label_poses,
    load_300w_faces,
    load_aflw_faces,
    mean_face_observations,
    split_by_group,
)
from headpose_training.mean_face import estimate_mean_face, refine_mean_face

__all__ = [
    "TrainingData",
    "cached_mean_face",
    "prepare_data",
    "split_names",
    "split_sources",
]


@dataclass
class TrainingData:
    """Training and validation faces per source (pose-labelled) and the mean face (70x3 mm)."""

    train: list[FaceSet]
    val: list[FaceSet]
    weights: list[float]
    mean_face_mm: np.ndarray

    def split_names(self) -> dict[str, dict[str, list[str]]]:
        """Face names per source and side, as the checkpoint stores them."""
        return split_names(self.train, self.val)


def prepare_data(
    config: TrainConfig,
    data_root: Path,
    cache_dir: Path | None,
    mean_face_mm: np.ndarray | None = None,
) -> TrainingData:
    """Load every source, split it by photograph, fit the mean face, label the poses.

    The mean face is factorised from the 300-W training shapes and, with AFLW, given its depth
    by AFLW's training faces (:mod:`headpose_training.mean_face`); validation faces never
    touch it. A resumed run passes the checkpoint's ``mean_face_mm`` instead.
    """
    size = config.model.input_size
    train, val = split_sources(config, data_root, cache_dir)
    weights = list(config.source_weights[: len(train)])
    if mean_face_mm is None:
        mean_face_mm = cached_mean_face(config, train, cache_dir)
    train = [label_poses(s, mean_face_mm, size, cache_dir) for s in train]
    val = [label_poses(s, mean_face_mm, size, cache_dir) for s in val]
    return TrainingData(train, val, weights, mean_face_mm)


def split_sources(
    config: TrainConfig, data_root: Path, cache_dir: Path | None
) -> tuple[list[FaceSet], list[FaceSet]]:
    """Every source of the run (300-W, then AFLW if used), split by photograph.

    Seeded by ``config.seed``: the same data and config give the same split on every call, so
    a run's held-out faces can be found again without its checkpoint.
    """
    sources = [
        load_300w_faces(
            [data_root / config.data_300w / split for split in config.train_splits],
            config.model.input_size,
            config.crop_margin,
            cache_dir,
        )
    ]
    if config.uses_aflw:
        sources.append(
            load_aflw_faces(data_root / config.aflw_folder, config.crop_margin, cache_dir)
        )
    splits = [split_by_group(s.groups, config.val_fraction, config.seed) for s in sources]
    train = [s.subset(t) for s, (t, _) in zip(sources, splits, strict=True)]
    val = [s.subset(v) for s, (_, v) in zip(sources, splits, strict=True)]
    return train, val


def split_names(train: list[FaceSet], val: list[FaceSet]) -> dict[str, dict[str, list[str]]]:
    """Face names per source and side (the split as a checkpoint stores it)."""
    return {
        t.source: {"train": list(t.names), "val": list(v.names)}
        for t, v in zip(train, val, strict=True)
    }


def cached_mean_face(
    config: TrainConfig, train: list[FaceSet], cache_dir: Path | None
) -> np.ndarray:
    """:func:`_fit_mean_face`, cached under a hash of everything it depends on."""
    key = {
        "faces": [sorted(s.names) for s in train],
        "input": config.model.input_size,
        "margin": config.crop_margin,
        "iterations": config.mean_face_iterations,
        "aflw_faces": config.mean_face_aflw_faces,
        "seed": config.seed,
        "version": 2,
    }
    path = None
    if cache_dir is not None:
        digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:10]
        path = cache_dir / f"mean_face_{digest}.npy"
        if path.is_file():
            return np.load(path)
    model = _fit_mean_face(config, train)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, model)
    return model


def _fit_mean_face(config: TrainConfig, train: list[FaceSet]) -> np.ndarray:
    """Factorise the 300-W training shapes; refine the depth with AFLW's yaw labels if used."""
    size = config.model.input_size
    faces_300w = train[0]
    shapes = np.stack(
        [
            apply_affine(faces_300w.landmarks[i], crop_affine(faces_300w.box(i), size))
            for i in range(len(faces_300w))
        ]
    )
    initial = estimate_mean_face(shapes[np.all(faces_300w.mask > 0, axis=1)])
    if len(train) == 1:
        return initial
    aflw = train[1]
    rng = np.random.default_rng(config.seed)
    chosen = rng.permutation(len(aflw))[: config.mean_face_aflw_faces]
    observations = mean_face_observations(aflw, chosen, size)
    observations += mean_face_observations(faces_300w, np.arange(len(faces_300w)), size)
    refined = refine_mean_face(initial, observations, size, config.mean_face_iterations)
    for iteration, record in enumerate(refined.history, start=1):
        print(
            f"mean face pass {iteration}: free-PnP yaw vs AFLW label"
            f" {record['free_pnp_yaw_mae_deg']:.2f} deg MAE",
            flush=True,
        )
    return refined.model_mm
