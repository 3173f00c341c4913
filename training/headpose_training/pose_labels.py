"""Head-pose labels from 2D landmarks by PnP against the 3D mean face, in the crop camera.

The paper labels landmark-only sets (300-W) with POSIT against a mean 3D face; this is the same
with OpenCV's SQPnP (a global solver, no initial guess to go wrong on profile faces) and a
Levenberg-Marquardt polish. For AFLW, whose yaw comes from its own fit, :func:`pose_with_yaw`
keeps that yaw and solves only pitch, roll and translation.

Angles are *ray-relative*: the orientation seen by a camera looking straight at the head origin
(``R_camera = ray_rotation(t) @ R(yaw, pitch, roll)``), which is what a crop's appearance shows
and what :mod:`headpose_ros.core.metric_pose` assumes when it turns the network's angles onto
the face's real viewing ray. Relative to the crop camera's axes they would carry the few degrees
by which the head origin (between the eyes) sits off the crop centre.

Poses are ``(yaw, pitch, roll deg, tx, ty, tz m)`` for the crop camera of a ``crop_size`` crop.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.optimize import least_squares

from headpose_ros.core.geometry import (
    crop_camera_matrix,
    euler_to_matrix,
    matrix_to_euler,
    project_points,
)
from headpose_ros.core.metric_pose import ray_rotation

__all__ = ["pose_from_landmarks", "pose_with_yaw", "ray_relative_pose", "rotation_of_pose"]


def ray_relative_pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Camera-frame rotation and translation -> pose vector with ray-relative angles."""
    relative = ray_rotation(translation).T @ rotation
    return np.r_[np.rad2deg(matrix_to_euler(relative)), np.asarray(translation, float).ravel()]


def rotation_of_pose(pose: np.ndarray) -> np.ndarray:
    """Camera-frame rotation of a pose vector with ray-relative angles (inverse of the above)."""
    yaw, pitch, roll = np.deg2rad(np.asarray(pose[:3], dtype=np.float64))
    return ray_rotation(np.asarray(pose[3:6], dtype=np.float64)) @ euler_to_matrix(
        yaw, pitch, roll
    )


def _usable(points: np.ndarray, model_m: np.ndarray) -> np.ndarray:
    usable = np.all(np.isfinite(points), axis=1) & np.all(np.isfinite(model_m), axis=1)
    if usable.sum() < 4:
        raise ValueError(f"PnP needs at least 4 points, got {int(usable.sum())}")
    return usable


def pose_from_landmarks(points: np.ndarray, model_m: np.ndarray, crop_size: float) -> np.ndarray:
    """Pose of ``model_m`` (L, 3) that best projects onto ``points`` (L, 2).

    Rows where the point or the model point is NaN (unannotated, or a point the 3D face does
    not have) are ignored.
    """
    usable = _usable(points, model_m)
    object_points = np.ascontiguousarray(model_m[usable], dtype=np.float64)
    image_points = np.ascontiguousarray(points[usable], dtype=np.float64)
    camera = crop_camera_matrix(crop_size)
    ok, rvec, tvec = cv2.solvePnP(
        object_points, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP
    )
    if not ok:
        raise ValueError("PnP failed for this landmark set")
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, camera, None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    return ray_relative_pose(rotation, tvec.ravel())


def pose_with_yaw(
    points: np.ndarray, model_m: np.ndarray, crop_size: float, yaw_deg: float
) -> np.ndarray:
    """Like :func:`pose_from_landmarks`, with the yaw fixed to ``yaw_deg`` (a data set's label).

    Starts from the free PnP solution with its yaw replaced, then minimises the reprojection
    error over pitch, roll and translation (Levenberg-Marquardt).
    """
    start = pose_from_landmarks(points, model_m, crop_size)
    usable = _usable(points, model_m)
    observed, model = points[usable], model_m[usable]
    camera = crop_camera_matrix(crop_size)

    def residuals(free: np.ndarray) -> np.ndarray:
        pose = np.r_[yaw_deg, free]
        projected = project_points(model, rotation_of_pose(pose), pose[3:6], camera)
        return (projected - observed).ravel()

    solution = least_squares(residuals, start[1:], method="lm")
    return np.r_[yaw_deg, solution.x]
