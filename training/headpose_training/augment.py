"""Training-time augmentation (paper section 4.2) producing network-ready samples.

Each sample is cut from a cached face patch with :mod:`headpose_ros.core.crop`, the same code the
robot uses, through one affine transform that already contains the random rotation, zoom, shift
and mirror; the landmarks go through that same transform, so image and labels cannot drift
apart. Labels follow the paper's rules: landmarks outside the crop get mask 0 (unknown),
landmarks under a synthetic occluder stay annotated but become invisible, and the pose label is
recomputed by PnP from the transformed landmarks, which flips yaw, roll and tx under mirroring
and turns roll under in-plane rotation without a hand-written rule for each case.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from headpose_ros.core.crop import SquareBox, apply_affine, crop_affine, crop_image
from headpose_ros.core.landmarks import IBUG68, LandmarkScheme
from headpose_training.data import pose_from_landmarks

__all__ = [
    "AugmentConfig",
    "TrainingSample",
    "inside_crop",
    "make_sample",
    "paint_occluder",
    "scale_hsv",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random operations; ``enabled=False`` gives the plain evaluation crop."""

    enabled: bool = True
    max_rotation_deg: float = 45.0
    max_scale: float = 0.15
    max_shift: float = 0.05
    mirror_probability: float = 0.5
    hsv_range: tuple[float, float] = (0.5, 1.5)
    occluder_probability: float = 0.5
    occluder_size: tuple[float, float] = (0.15, 0.5)


@dataclass
class TrainingSample:
    """One augmented crop and its labels, all in crop pixels of an ``S x S`` crop."""

    crop: np.ndarray  # (S, S, 3) uint8 BGR
    landmarks: np.ndarray  # (L, 2)
    mask: np.ndarray  # (L,) 1 = annotated and inside the crop
    visibility: np.ndarray  # (L,) 1 = visible
    pose: np.ndarray  # (6,) yaw, pitch, roll deg, tx, ty, tz m


def inside_crop(points: np.ndarray, size: int) -> np.ndarray:
    """Tell which points are finite and fall on the crop's pixels."""
    finite = np.all(np.isfinite(points), axis=1)
    with np.errstate(invalid="ignore"):
        return finite & np.all((points >= 0.0) & (points <= size - 1.0), axis=1)


def scale_hsv(crop: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Multiply hue, saturation and value by ``factors`` (hue wraps around, the others clip)."""
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).astype(np.float32) * factors.astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0], 180.0)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)


def paint_occluder(
    image: np.ndarray,
    points: np.ndarray,
    reference_size: float,
    size_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Paint a random rectangle (flat colour plus noise) in place; return the visibility left.

    The rectangle's sides are ``size_range`` fractions of ``reference_size`` (the crop side) and
    it is centred near a random landmark so that it usually hides part of the face. Used on
    training crops and, by the evaluation, on whole test images.
    """
    height_px, width_px = image.shape[:2]
    width, height = np.minimum(
        (rng.uniform(*size_range, size=2) * reference_size).astype(int), [width_px, height_px]
    )
    width, height = max(width, 1), max(height, 1)
    anchor = points[rng.integers(len(points))]
    if not np.all(np.isfinite(anchor)):
        anchor = np.array([width_px / 2.0, height_px / 2.0])
    x0 = int(np.clip(anchor[0] + rng.uniform(-0.5, 0.5) * width - width / 2, 0, width_px - width))
    y0 = int(
        np.clip(anchor[1] + rng.uniform(-0.5, 0.5) * height - height / 2, 0, height_px - height)
    )
    colour = rng.integers(0, 256, size=3)
    noise = rng.normal(0.0, rng.uniform(0.0, 40.0), size=(height, width, 3))
    image[y0 : y0 + height, x0 : x0 + width] = np.clip(colour + noise, 0, 255).astype(np.uint8)
    with np.errstate(invalid="ignore"):
        covered = (
            (points[:, 0] >= x0 - 0.5)
            & (points[:, 0] <= x0 + width - 0.5)
            & (points[:, 1] >= y0 - 0.5)
            & (points[:, 1] <= y0 + height - 0.5)
        )
    return (~covered).astype(np.float64)


def make_sample(
    patch: np.ndarray,
    landmarks: np.ndarray,
    mask: np.ndarray,
    box: SquareBox,
    out_size: int,
    mean_face_m: np.ndarray,
    config: AugmentConfig,
    rng: np.random.Generator,
    scheme: LandmarkScheme = IBUG68,
) -> TrainingSample:
    """Cut one (possibly augmented) training crop of ``box`` from ``patch`` with its labels."""
    rotation = scale = 0.0
    shift = np.zeros(2)
    mirror = False
    if config.enabled:
        rotation = np.deg2rad(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg))
        scale = rng.uniform(-config.max_scale, config.max_scale)
        shift = rng.uniform(-config.max_shift, config.max_shift, size=2) * box.side
        mirror = rng.random() < config.mirror_probability
    window = SquareBox(box.cx + shift[0], box.cy + shift[1], box.side * (1.0 + scale))
    affine = crop_affine(window, out_size, rotation)
    if mirror:
        # Mirror inside the same warp: x -> (S - 1) - x maps pixel centres onto pixel centres.
        flip = np.array([[-1.0, 0.0, out_size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        affine = (flip @ np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]
    crop = crop_image(patch, affine, out_size)
    points = apply_affine(landmarks, affine)
    annotated = mask.astype(np.float64).copy()
    if mirror:
        order = list(scheme.flip_permutation)
        points, annotated = points[order], annotated[order]
    pose = pose_from_landmarks(
        np.where(annotated[:, None] > 0, points, np.nan), mean_face_m, out_size
    )
    visibility = np.ones(len(points))
    if config.enabled:
        crop = scale_hsv(crop, rng.uniform(*config.hsv_range, size=3))
        if rng.random() < config.occluder_probability:
            visibility = paint_occluder(crop, points, out_size, config.occluder_size, rng)
    in_crop = inside_crop(points, out_size).astype(np.float64)
    return TrainingSample(crop, points, annotated * in_crop, visibility, pose)
