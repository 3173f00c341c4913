"""Metric 6-DoF head pose from landmarks and camera intrinsics.

With intrinsics, PnP of the *visible* landmarks against the manifest's mean 3D face gives the
head's position and orientation in the camera optical frame (metres). Occluded landmarks are
left out: the MNN+OR still estimates where they are, but those positions are guesses and would
bias the solution. Without valid intrinsics only the network's orientation is available and
results are flagged as not metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from headpose_ros.core.geometry import euler_to_matrix

__all__ = [
    "CameraModel",
    "IntrinsicsError",
    "MetricPose",
    "camera_from_intrinsics",
    "nominal_camera",
    "orientation_from_network",
    "ray_rotation",
    "solve_metric_pose",
]


class IntrinsicsError(ValueError):
    """Camera intrinsics that cannot be used (NaN, zero focal length, wrong shape)."""


@dataclass(frozen=True)
class CameraModel:
    """Pinhole intrinsics ``K`` (3x3) and OpenCV distortion coefficients of the image."""

    matrix: np.ndarray
    distortion: np.ndarray

    def normalised(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 2) normalised image coordinates (x/z, y/z of the ray) of pixels, undistorted."""
        points = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.undistortPoints(points, self.matrix, self.distortion).reshape(-1, 2)

    def bearing(self, pixel: np.ndarray) -> np.ndarray:
        """Return the unit ray in the optical frame through an image pixel (distortion removed)."""
        x, y = self.normalised(pixel)[0]
        ray = np.array([x, y, 1.0])
        return ray / np.linalg.norm(ray)


def camera_from_intrinsics(k: np.ndarray, distortion: np.ndarray | None = None) -> CameraModel:
    """Build a validated :class:`CameraModel` from a 3x3 (or 9-value row-major) K and distortion.

    Raises :class:`IntrinsicsError` with the reason: an all-zero K is what an uncalibrated
    camera driver publishes in CameraInfo, and NaN values come from broken calibration files.
    """
    matrix = np.asarray(k, dtype=np.float64)
    if matrix.size != 9:
        raise IntrinsicsError(f"K must have 9 values, got {matrix.size}")
    matrix = matrix.reshape(3, 3)
    coefficients = (
        np.zeros(0) if distortion is None else np.asarray(distortion, dtype=np.float64).ravel()
    )
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(coefficients)):
        raise IntrinsicsError("camera intrinsics contain NaN or infinite values")
    if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise IntrinsicsError(
            f"focal lengths must be positive, got fx={matrix[0, 0]}, fy={matrix[1, 1]}"
        )
    if coefficients.size not in (0, 4, 5, 8, 12, 14):
        raise IntrinsicsError(
            f"OpenCV takes 4, 5, 8, 12 or 14 distortion coefficients, got {coefficients.size}"
        )
    return CameraModel(matrix=matrix, distortion=coefficients)


@dataclass(frozen=True)
class MetricPose:
    """PnP result: head frame in the optical frame, and how well it explains the landmarks."""

    rotation: np.ndarray
    translation: np.ndarray
    reprojection_error_px: float
    points_used: int


def solve_metric_pose(
    landmarks_px: np.ndarray,
    visibility: np.ndarray,
    mean_face_m: np.ndarray,
    camera: CameraModel,
    visibility_threshold: float = 0.5,
    min_points: int = 6,
) -> MetricPose | str:
    """Head pose in the camera frame, or a short reason why it could not be solved.

    SQPnP finds the global minimum of the reprojection error, so it needs no initial guess and
    cannot settle on the mirrored solution an iterative solver may reach from a bad start; it
    is also the fastest OpenCV solver for a few dozen points (about 0.04 ms here).
    """
    points = np.asarray(landmarks_px, dtype=np.float64)
    use = (np.asarray(visibility) >= visibility_threshold) & np.all(np.isfinite(points), axis=1)
    if int(use.sum()) < min_points:
        return f"only {int(use.sum())} visible landmarks (need {min_points})"
    image_points, object_points = points[use], mean_face_m[use]
    if float(np.ptp(image_points, axis=0).max()) < 1.0:
        return "landmarks collapse to a point"
    try:
        ok, rvec, tvec = cv2.solvePnP(
            object_points, image_points, camera.matrix, camera.distortion, flags=cv2.SOLVEPNP_SQPNP
        )
    except cv2.error as error:
        return f"PnP failed: {error.msg if hasattr(error, 'msg') else error}"
    if not ok or not np.all(np.isfinite(tvec)) or float(tvec[2, 0]) <= 0:
        return "PnP did not converge to a face in front of the camera"
    rotation, _ = cv2.Rodrigues(rvec)
    projected, _ = cv2.projectPoints(object_points, rvec, tvec, camera.matrix, camera.distortion)
    error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points) ** 2, axis=1))))
    return MetricPose(
        rotation=rotation,
        translation=tvec.reshape(3),
        reprojection_error_px=error,
        points_used=int(use.sum()),
    )


def orientation_from_network(pose_ed_deg: np.ndarray) -> np.ndarray:
    """Rotation matrix of the network's ``p^ED`` Euler angles (degrees)."""
    yaw, pitch, roll = np.deg2rad(np.asarray(pose_ed_deg[:3], dtype=np.float64))
    return euler_to_matrix(yaw, pitch, roll)


def ray_rotation(bearing: np.ndarray) -> np.ndarray:
    """Smallest rotation taking the optical axis (0, 0, 1) onto ``bearing``.

    The network's angles are relative to a camera looking straight at the face (the crop
    camera); turning that camera onto the real ray expresses them in the real optical frame.
    """
    b = np.asarray(bearing, dtype=np.float64)
    b = b / np.linalg.norm(b)
    if b[2] <= -1.0 + 1e-12:
        return np.diag([1.0, -1.0, -1.0])  # half turn; cannot happen for a visible face
    # Rodrigues for unit vectors a=(0,0,1), b: R = I + [v]x + [v]x^2 / (1 + a.b), v = a x b.
    v = np.array([-b[1], b[0], 0.0])
    cross = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + cross + cross @ cross / (1.0 + b[2])


def nominal_camera(width: int, height: int) -> CameraModel:
    """Make a stand-in pinhole (focal = longer image side, about 53 degrees across) for bearings.

    Used only to point a non-metric face's unit position vector roughly along its viewing ray
    when no intrinsics were given; such results are flagged as not metric.
    """
    focal = float(max(width, height))
    matrix = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    return CameraModel(matrix=matrix, distortion=np.zeros(0))
