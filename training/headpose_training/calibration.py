"""Thresholds of an exported model that depend on the model itself, chosen on validation data.

**Face presence.** The node tells a face from a face-free crop by the mean peak of the crop's
heatmaps (as a multiple of a flat map's value): a tracked face whose crop falls below ``min``
is lost for the frame, and a crop above ``clear`` shows a face whatever the detector says (so a
profile the detector misses keeps its track). How sharp the heatmaps are depends on the
network and its training, so both values are measured for every exported model, on the run's
validation faces (300-W and AFLW, every yaw) and on face-free crops cut from the 300-W
validation photographs away from the annotated face, plus flat and noise crops:

* ``min`` is the 1st percentile of the validation faces' presence (99% of real faces,
  profiles included, keep their track);
* ``clear`` is the 99th percentile of the face-free crops' presence (or ``min``, if higher).

The chosen values go into the manifest (``face_presence``) with the figures behind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from headpose_ros.core.config import InferenceConfig
from headpose_ros.core.crop import (
    SquareBox,
    crop_affine,
    crop_image,
    square_box_from_landmarks,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.inference import ModelRunner, load_model
from headpose_ros.core.metrics import YAW_BINS
from headpose_training.checkpoint import load_checkpoint
from headpose_training.data import iter_300w
from headpose_training.faces import FaceSet, label_poses
from headpose_training.occlusion_regressor_training import split_faces

__all__ = ["background_crops", "calibrate_presence", "face_crops", "presence_of"]

#: Share of validation faces allowed below ``min``, and of face-free crops above ``clear``.
FACE_QUANTILE = 0.01
BACKGROUND_QUANTILE = 0.99


def presence_of(runner: ModelRunner, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    """Mean heatmap peak of each uint8 crop, as a multiple of a flat map's value."""
    values = []
    for start in range(0, len(crops), batch):
        inputs = to_network_input(crops[start : start + batch], runner.manifest.normalisation)
        heatmaps = runner.run(inputs).heatmaps
        _, peaks = decode_heatmaps(heatmaps, float(runner.manifest.input_size))
        values.append(peaks.mean(axis=1) * float(np.prod(heatmaps.shape[2:])))
    return np.concatenate(values)


def face_crops(faces: FaceSet, size: int) -> np.ndarray:
    """Every face of ``faces`` cut out by the product's crop rule: (N, size, size, 3) uint8."""
    return np.stack(
        [
            crop_image(faces.images[i], crop_affine(faces.box(i), size), size, faces.border_mode)
            for i in range(len(faces))
        ]
    )


def background_crops(
    images: list[np.ndarray], face_boxes: list[SquareBox], per_image: int, size: int, seed: int
) -> np.ndarray:
    """Square crops of face-box size that stay clear of each image's annotated face.

    Sides are 0.5 to 1.5 times the face's crop box, anywhere in the image where the square
    does not overlap the face's box; plus one flat grey and one noise crop per image. Photos
    can hold unannotated faces too, which is why ``clear`` is a high quantile, not the maximum.
    """
    rng = np.random.default_rng(seed)
    crops = []
    for image, face in zip(images, face_boxes, strict=True):
        height, width = image.shape[:2]
        found = 0
        for _ in range(50 * per_image):
            if found == per_image:
                break
            side = face.side * rng.uniform(0.5, 1.5)
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            reach = (side + face.side) / 2
            if abs(cx - face.cx) >= reach or abs(cy - face.cy) >= reach:
                crops.append(crop_image(image, crop_affine(SquareBox(cx, cy, side), size), size))
                found += 1
        crops.append(np.full((size, size, 3), int(rng.integers(0, 256)), np.uint8))
        crops.append(rng.integers(0, 256, (size, size, 3)).astype(np.uint8))
    return np.stack(crops)


def calibrate_presence(model_dir: Path, checkpoint_path: Path, data_root: Path) -> dict[str, Any]:
    """Measure the exported model's presence on validation faces and face-free crops.

    Returns ``{"min": ..., "clear": ...}`` and the figures behind them; the caller writes the
    thresholds into the manifest.
    """
    _, checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.config
    # The float network is the reference; the int8 file reproduces its presence within the
    # agreement headpose-quantize records (0.5% on average for the shipped model).
    inference = InferenceConfig(
        model_dir=str(model_dir), device="cpu", precision="float32", threads=2
    )
    runner = ModelRunner(load_model(inference), inference)
    size = runner.manifest.input_size
    faces = split_faces(checkpoint_path, data_root)
    presence, yaw = [], []
    for sides in faces.values():
        validation = label_poses(sides["val"], checkpoint.mean_face_mm, size)
        presence.append(presence_of(runner, face_crops(validation, size)))
        labelled = np.where(
            np.isnan(validation.yaw_label), validation.poses[:, 0], validation.yaw_label
        )
        yaw.append(labelled)
    face_presence, face_yaw = np.concatenate(presence), np.concatenate(yaw)

    wanted = set(checkpoint.split["300w"]["val"])
    images, boxes = [], []
    for folder in config.train_splits:
        for sample in iter_300w(data_root / config.data_300w / folder):
            if sample.name in wanted:
                images.append(sample.image)
                boxes.append(square_box_from_landmarks(sample.landmarks, config.crop_margin))
    background = presence_of(runner, background_crops(images, boxes, 4, size, config.seed))

    least = float(np.quantile(face_presence, FACE_QUANTILE))
    clear = max(least, float(np.quantile(background, BACKGROUND_QUANTILE)))
    by_bin = {}
    for low, high in YAW_BINS:
        chosen = (np.abs(face_yaw) >= low) & (np.abs(face_yaw) < high + 1e-9)
        by_bin[f"[{low:g},{high:g}]"] = {
            "faces": int(chosen.sum()),
            "share_at_least_min": float(np.mean(face_presence[chosen] >= least)),
            "share_at_least_clear": float(np.mean(face_presence[chosen] >= clear)),
        }
    return {
        "min": least,
        "clear": clear,
        "validation_faces": int(len(face_presence)),
        "face_presence_median": float(np.median(face_presence)),
        "faces_by_abs_yaw": by_bin,
        "face_free_crops": int(len(background)),
        "face_free_share_at_least_min": float(np.mean(background >= least)),
        "face_free_share_at_least_clear": float(np.mean(background >= clear)),
        "rule": f"min: {FACE_QUANTILE:.0%} quantile of validation faces; clear: "
        f"{BACKGROUND_QUANTILE:.0%} quantile of face-free crops",
    }
