"""AFLW face crops: the 21-point scheme, its mapping onto iBUG-68, yaw labels and duplicates.

``../shared/data/aflw_crops`` holds 120x120 crops of real faces over the whole yaw range, with a
yaw label from AFLW's own fit and 21 landmarks with per-point visibility (its README). This module
turns one entry of ``labels.json`` into the project's conventions:

* **Landmarks.** AFLW's 21 points are mapped onto the iBUG-68 slots they share with it; every
  other slot gets annotation mask 0, as the paper does when it trains across data sets with
  different landmark sets. The mapping keeps only exact twins. It was checked by running the
  300-W-trained model on 400 near-frontal crops and measuring, for every AFLW point, the mean
  distance to each predicted iBUG point (inter-ocular units): eye corners 5-7%, brow centres,
  nose tip, mouth corners and chin 7-8% (the model's own error on these crops), while the brow
  ends sit 10% from iBUG 17/21/22/26 (AFLW marks them further in), so they are left out; eye
  centres, nose wings, mouth centre and ear lobes have no single iBUG twin.
* **Visibility.** AFLW marks points hidden by the head itself, hair, hands or glasses as not
  visible (and gives them no position): a mapped slot is then labelled "not visible" with a
  known label, even though its position is unknown. These are the project's real
  self-occlusion labels.
* **Yaw sign.** AFLW's yaw is positive when the nose points to image-left; the project's
  (``headpose_ros.core.geometry``) is positive when it points to image-right, so the label is
  negated. ``tests/test_aflw.py`` checks this on real crops.
* **Duplicates.** AFLW holds the same photograph under several image numbers, annotated
  separately (yaw labels of one photo differ by up to 20 degrees). :func:`duplicate_groups` finds
  them so a validation split can keep every copy of a photo on one side.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from headpose_ros.core.crop import apply_affine
from headpose_ros.core.landmarks import IBUG68
from headpose_training.mean_face import EAR_LOBES, MODEL_POINTS, FaceObservation

__all__ = [
    "AFLW21_FLIP",
    "AFLW21_MODEL_WEIGHTS",
    "AFLW21_TO_IBUG68",
    "AFLW_BOX_SCALE",
    "AflwFace",
    "aflw_observation",
    "duplicate_groups",
    "load_aflw_crops",
    "to_ibug68",
]

#: AFLW point -> iBUG-68 slot, for the points with an exact twin (module docstring):
#: brow centres, outer and inner eye corners, nose tip, mouth corners, chin.
AFLW21_TO_IBUG68: dict[int, int] = {
    1: 19,
    4: 24,
    6: 36,
    8: 39,
    9: 42,
    11: 45,
    14: 30,
    17: 48,
    19: 54,
    20: 8,
}

#: Left-right mirror permutation of the 21 AFLW points (brows, eyes, ears, nose wings, mouth
#: corners swap; nose centre, mouth centre and chin stay).
AFLW21_FLIP: tuple[int, ...] = (
    5,
    4,
    3,
    2,
    1,
    0,
    11,
    10,
    9,
    8,
    7,
    6,
    16,
    15,
    14,
    13,
    12,
    19,
    18,
    17,
    20,
)

#: The square crop box of the 21 annotated points is this much smaller than the box of the same
#: face's 68 iBUG points (median 1.044 over 400 near-frontal crops, centres within 0.1% of the
#: side), so AFLW boxes are scaled by it to match the crop rule the network runs with.
AFLW_BOX_SCALE = 1.044

_NUM_POINTS = 21
#: Thumbnail side and correlation above which two crops are the same photograph.
_THUMBNAIL = 16
_DUPLICATE_CORRELATION = 0.985


@dataclass(frozen=True)
class AflwFace:
    """One AFLW crop in the project's conventions.

    ``points`` (21, 2) crop pixels with NaN rows where not annotated; ``visible`` (21,) bool;
    ``yaw_deg`` in :mod:`headpose_ros.core.geometry`'s sign (nose to image-right positive).
    """

    name: str
    image_path: Path
    points: np.ndarray
    visible: np.ndarray
    yaw_deg: float


def load_aflw_crops(folder: Path | str) -> list[AflwFace]:
    """Read ``labels.json`` of an ``aflw_crops`` folder (images are decoded later, on demand).

    A point that is marked visible without coordinates, or the reverse, would make the labels
    contradict each other, so it is an error naming the image rather than a silent guess.
    """
    folder = Path(folder)
    entries = json.loads((folder / "labels.json").read_text())
    faces = []
    for entry in entries:
        raw_points, visible = entry["points"], entry["visible"]
        if len(raw_points) != _NUM_POINTS or len(visible) != _NUM_POINTS:
            raise ValueError(f"{entry['image']}: expected {_NUM_POINTS} points and flags")
        if any((p is None) == bool(v) for p, v in zip(raw_points, visible, strict=True)):
            raise ValueError(f"{entry['image']}: a point's visibility and coordinates disagree")
        points = np.array(
            [p if p is not None else (np.nan, np.nan) for p in raw_points], dtype=np.float64
        )
        faces.append(
            AflwFace(
                name=Path(entry["image"]).stem,
                image_path=folder / entry["image"],
                points=points,
                visible=np.asarray(visible, dtype=bool),
                yaw_deg=-float(entry["yaw_deg"]),
            )
        )
    return faces


def to_ibug68(points: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
    """Map 21 AFLW points onto the 68 iBUG slots.

    Returns ``landmarks`` (68, 2) NaN where unknown, ``mask`` (68,) 1 where the position is
    annotated, ``visibility`` (68,) the label, and ``visibility_mask`` (68,) 1 where the label
    is known (every mapped slot, visible or hidden).
    """
    landmarks = np.full((IBUG68.num_points, 2), np.nan)
    mask = np.zeros(IBUG68.num_points)
    visibility = np.zeros(IBUG68.num_points)
    visibility_mask = np.zeros(IBUG68.num_points)
    for source, slot in AFLW21_TO_IBUG68.items():
        visibility_mask[slot] = 1.0
        if visible[source]:
            landmarks[slot] = points[source]
            mask[slot] = 1.0
            visibility[slot] = 1.0
    return {
        "landmarks": landmarks,
        "mask": mask,
        "visibility": visibility,
        "visibility_mask": visibility_mask,
    }


def _model_weights() -> np.ndarray:
    """Each AFLW point as a combination of the 70 mean-face points (zero rows: not used).

    Mapped points take their twin, the ear lobes the model's own ear-lobe points, the eye
    centres the mean of the eye's six points and the mouth centre the mean of the inner-lip
    centres 62 and 66. Brow ends and nose wings are 8-10% of the eye distance off their nearest
    iBUG points, so they would bend the model: they are left out.
    """
    weights = np.zeros((_NUM_POINTS, MODEL_POINTS))
    for source, slot in AFLW21_TO_IBUG68.items():
        weights[source, slot] = 1.0
    weights[7, list(IBUG68.right_eye)] = 1.0 / len(IBUG68.right_eye)
    weights[10, list(IBUG68.left_eye)] = 1.0 / len(IBUG68.left_eye)
    weights[18, [62, 66]] = 0.5
    weights[12, EAR_LOBES[0]] = 1.0
    weights[16, EAR_LOBES[1]] = 1.0
    return weights


#: (21, MODEL_POINTS) weights of :func:`_model_weights`.
AFLW21_MODEL_WEIGHTS = _model_weights()


def aflw_observation(face: AflwFace, affine: np.ndarray) -> FaceObservation:
    """Build the mean-face observation of a face: its visible, modelled points and yaw label."""
    used = face.visible & (AFLW21_MODEL_WEIGHTS.sum(axis=1) > 0)
    return FaceObservation(
        apply_affine(face.points[used], affine), AFLW21_MODEL_WEIGHTS[used], face.yaw_deg
    )


def duplicate_groups(images: Sequence[np.ndarray]) -> np.ndarray:
    """Group id per image, equal for copies of the same photograph (union of near-duplicates).

    Two crops are copies when their mean-removed 16x16 grey thumbnails correlate above 0.985;
    checked by eye on random pairs, every pair found so was the same photo.
    """
    thumbs = np.stack(
        [
            cv2.resize(
                cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image,
                (_THUMBNAIL, _THUMBNAIL),
                interpolation=cv2.INTER_AREA,
            )
            .astype(np.float32)
            .ravel()
            for image in images
        ]
    )
    thumbs -= thumbs.mean(axis=1, keepdims=True)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True) + 1e-6
    parent = np.arange(len(thumbs))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(thumbs), 1000):
        similar = thumbs[start : start + 1000] @ thumbs.T
        for a, b in zip(*np.nonzero(similar > _DUPLICATE_CORRELATION), strict=True):
            ra, rb = root(start + int(a)), root(int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(len(thumbs))])
