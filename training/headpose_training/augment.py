"""Training-time augmentation (paper section 4.2) producing network-ready samples.

Each sample is cut from a stored face image with :mod:`headpose_ros.core.crop`, the same code
the robot uses, through one affine transform that already contains the random rotation, zoom,
shift and mirror; the landmarks go through that same transform, so image and labels cannot
drift apart. Labels follow the paper's rules: landmarks outside the crop get mask 0 (unknown),
landmarks under a synthetic occluder stay annotated but become invisible.

The pose label is the face's label in its plain crop (:func:`headpose_training.faces.label_poses`)
carried through the same transform exactly, without a PnP per sample: an in-plane rotation of
the crop about its centre (the crop camera's principal point) is a rotation of the camera about
its optical axis, so it turns the head by the same angle about that axis; a zoom moves the head
along its ray; a shift moves it across the image without changing how it looks, so the
ray-relative angles stay; a mirror negates yaw and roll. Labels that came from a data set's own
yaw (AFLW) therefore keep their meaning under augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from headpose_ros.core.crop import SquareBox, apply_affine, crop_affine, crop_image
from headpose_ros.core.geometry import CROP_FOCAL_FACTOR, euler_to_matrix, matrix_to_euler
from headpose_ros.core.landmarks import IBUG68, LandmarkScheme

__all__ = [
    "AugmentConfig",
    "FaceLabels",
    "TrainingSample",
    "inside_crop",
    "make_sample",
    "mirror_pose",
    "paint_occluder",
    "scale_hsv",
    "transform_pose",
]

#: Mirroring in the optical frame (x -> -x) and in the head frame (left <-> right, y -> -y).
_MIRROR_OPTICAL = np.diag([-1.0, 1.0, 1.0])
_MIRROR_HEAD = np.diag([1.0, -1.0, 1.0])


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
    blur_probability: float = 0.0
    max_blur_sigma: float = 1.5


@dataclass(frozen=True)
class FaceLabels:
    """One face's labels in image pixels, and its pose in the plain crop's camera.

    ``landmarks`` (L, 2) NaN where unknown; ``mask`` (L,) position annotated; ``visibility``
    (L,) and ``visibility_mask`` (L,) the label and where it is known; ``pose`` (6,) ray-relative
    yaw, pitch, roll (deg) and translation (m); ``pose_known`` whether ``pose`` is a label.
    """

    landmarks: np.ndarray
    mask: np.ndarray
    visibility: np.ndarray
    visibility_mask: np.ndarray
    pose: np.ndarray
    pose_known: bool = True


@dataclass
class TrainingSample:
    """One augmented crop and its labels, all in crop pixels of an ``S x S`` crop."""

    crop: np.ndarray  # (S, S, 3) uint8 BGR
    landmarks: np.ndarray  # (L, 2)
    mask: np.ndarray  # (L,) 1 = annotated and inside the crop
    visibility: np.ndarray  # (L,) 1 = visible
    visibility_mask: np.ndarray  # (L,) 1 = visibility label known
    pose: np.ndarray  # (6,) yaw, pitch, roll deg (ray-relative), tx, ty, tz m
    pose_mask: float  # 1 = pose label known


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
    training crops and, by the evaluation, on whole test images. Points with unknown position
    (NaN) count as not covered.
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


def mirror_pose(pose: np.ndarray, out_size: int) -> np.ndarray:
    """Pose of the mirror image ``x -> S - 1 - x`` of a crop: yaw and roll negate, tx flips.

    The orientation is mirrored in both frames (``M_optical R M_head``); the head origin's
    pixel is mirrored like every other pixel and its depth kept.
    """
    rotation = _MIRROR_OPTICAL @ euler_to_matrix(*np.deg2rad(pose[:3])) @ _MIRROR_HEAD
    focal, centre = CROP_FOCAL_FACTOR * out_size, out_size / 2.0
    u = focal * pose[3] / pose[5] + centre
    mirrored_u = (out_size - 1.0) - u
    return np.r_[
        np.rad2deg(matrix_to_euler(rotation)), (mirrored_u - centre) * pose[5] / focal, pose[4:6]
    ]


def transform_pose(
    pose: np.ndarray, plain_to_new: np.ndarray, size_ratio: float, out_size: int
) -> np.ndarray:
    """Pose label of a crop related to the plain crop by the 2x3 affine ``plain_to_new``.

    ``plain_to_new`` is a similarity (no mirror); ``size_ratio`` the new crop window's side
    over the plain one's. The rotation part turns the head about the optical axis; the head
    origin's pixel is mapped and its depth scaled by ``size_ratio``; ray-relative angles are
    otherwise kept (module docstring).
    """
    linear = plain_to_new[:, :2] / np.sqrt(abs(np.linalg.det(plain_to_new[:, :2])))
    turn = np.eye(3)
    turn[:2, :2] = linear
    rotation = turn @ euler_to_matrix(*np.deg2rad(pose[:3]))
    focal, centre = CROP_FOCAL_FACTOR * out_size, out_size / 2.0
    origin = focal * np.asarray(pose[3:5]) / pose[5] + centre
    moved = apply_affine(origin, plain_to_new)
    depth = pose[5] * size_ratio
    return np.r_[np.rad2deg(matrix_to_euler(rotation)), (moved - centre) * depth / focal, depth]


def make_sample(
    image: np.ndarray,
    box: SquareBox,
    labels: FaceLabels,
    out_size: int,
    config: AugmentConfig,
    rng: np.random.Generator,
    border_mode: int = cv2.BORDER_CONSTANT,
    scheme: LandmarkScheme = IBUG68,
) -> TrainingSample:
    """Cut one (possibly augmented) training crop of ``box`` from ``image`` with its labels."""
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
    pose = np.full(6, np.nan)
    if labels.pose_known:
        plain = np.vstack([crop_affine(box, out_size), [0.0, 0.0, 1.0]])
        pose = transform_pose(
            labels.pose,
            (np.vstack([affine, [0.0, 0.0, 1.0]]) @ np.linalg.inv(plain))[:2],
            1.0 + scale,
            out_size,
        )
    order = np.arange(len(labels.landmarks))
    if mirror:
        # Mirror inside the same warp: x -> (S - 1) - x maps pixel centres onto pixel centres.
        flip = np.array([[-1.0, 0.0, out_size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        affine = (flip @ np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]
        order = np.asarray(scheme.flip_permutation)
        if labels.pose_known:
            pose = mirror_pose(pose, out_size)
    crop = crop_image(image, affine, out_size, border_mode)
    points = apply_affine(labels.landmarks, affine)[order]
    annotated = labels.mask[order].astype(np.float64)
    visibility = labels.visibility[order].astype(np.float64)
    visibility_mask = labels.visibility_mask[order].astype(np.float64)
    if config.enabled:
        crop = scale_hsv(crop, rng.uniform(*config.hsv_range, size=3))
        if rng.random() < config.blur_probability:
            sigma = rng.uniform(0.3, config.max_blur_sigma)
            crop = cv2.GaussianBlur(crop, (0, 0), sigma)
        if rng.random() < config.occluder_probability:
            uncovered = paint_occluder(crop, points, out_size, config.occluder_size, rng)
            # A covered point is hidden, and that label is known wherever its position is.
            visibility = visibility * uncovered
            visibility_mask = np.maximum(visibility_mask, annotated * (1.0 - uncovered))
    in_crop = inside_crop(points, out_size).astype(np.float64)
    # A visible point outside the crop has no visibility to learn; a hidden one (no position)
    # keeps its label.
    visibility_mask = visibility_mask * np.where(annotated > 0, in_crop, 1.0)
    return TrainingSample(
        crop,
        points,
        annotated * in_crop,
        visibility,
        visibility_mask,
        pose,
        float(labels.pose_known),
    )
