"""Head-pose conventions and camera geometry, stated once for the whole project.

Frames
    Camera optical frame (REP-103 ``*_optical``): x right, y down, z forward into the scene.
    Head frame (REP-103 body, as REP-155 ``face_<id>``): origin between the eyes, x forward out
    of the face, y to the subject's left, z up. Units: metres.

Euler angles (radians unless a name ends in ``_deg``)
    The head's orientation is given relative to the *camera-facing* pose, the head looking
    straight into the camera, upright. ``R_optical_head = FACING_CAMERA @ Rz(yaw) @ Ry(pitch)
    @ Rx(roll)`` (intrinsic z-y'-x'', the REP-103 yaw-pitch-roll order). So, seen from the
    camera: positive yaw turns the nose towards the subject's left (image right), positive
    pitch tilts the nose down, positive roll tilts the head towards the subject's right
    shoulder.

Network pose vector ``p`` (paper-notes.md, "Pose parameters")
    ``p = (yaw_deg, pitch_deg, roll_deg, tx, ty, tz)``: Euler angles in degrees as above and
    the head origin in the *crop camera* optical frame, in metres. The crop camera has focal
    length ``CROP_FOCAL_FACTOR * crop width`` and its principal point at the crop centre.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CROP_FOCAL_FACTOR",
    "FACING_CAMERA",
    "angle_to_camera",
    "attention_score",
    "crop_camera_matrix",
    "euler_to_matrix",
    "matrix_to_euler",
    "pose6_to_rotation_translation",
    "project_points",
    "quaternion_to_rotation",
    "rotation_to_quaternion",
    "rotation_translation_to_pose6",
]

#: Crop camera focal length as a multiple of the crop width (paper-notes.md).
CROP_FOCAL_FACTOR = 1.5

#: Rotation taking head-frame vectors to optical-frame vectors for a head facing the camera:
#: head x (forward) -> optical -z, head y (subject's left) -> optical +x, head z (up) -> -y.
FACING_CAMERA = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head orientation in the camera optical frame from yaw, pitch, roll (radians)."""
    return FACING_CAMERA @ _rot_z(yaw) @ _rot_y(pitch) @ _rot_x(roll)


def matrix_to_euler(rotation_optical_head: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_to_matrix`: (yaw, pitch, roll) in radians.

    Pitch is kept in [-pi/2, pi/2]; at exactly +-90 degrees of pitch yaw and roll are not
    separable and roll is reported as 0.
    """
    r = FACING_CAMERA.T @ np.asarray(rotation_optical_head, dtype=np.float64)
    pitch = float(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    if abs(r[2, 0]) < 1.0 - 1e-9:
        yaw = float(np.arctan2(r[1, 0], r[0, 0]))
        roll = float(np.arctan2(r[2, 1], r[2, 2]))
    else:
        yaw = float(np.arctan2(-r[0, 1], r[1, 1]))
        roll = 0.0
    return yaw, pitch, roll


def crop_camera_matrix(crop_size: float) -> np.ndarray:
    """Intrinsics of the virtual camera that sees the crop (paper-notes.md)."""
    focal = CROP_FOCAL_FACTOR * crop_size
    return np.array(
        [[focal, 0.0, crop_size / 2.0], [0.0, focal, crop_size / 2.0], [0.0, 0.0, 1.0]]
    )


def project_points(
    points_head: np.ndarray, rotation: np.ndarray, translation: np.ndarray, camera: np.ndarray
) -> np.ndarray:
    """Pinhole projection of (L, 3) head-frame points to (L, 2) pixels (no distortion)."""
    in_camera = np.asarray(points_head, dtype=np.float64) @ rotation.T + translation
    projected = in_camera @ camera.T
    return projected[:, :2] / projected[:, 2:3]


def pose6_to_rotation_translation(pose6: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network pose vector (degrees, metres) -> rotation matrix and translation."""
    yaw, pitch, roll = np.deg2rad(np.asarray(pose6[:3], dtype=np.float64))
    return euler_to_matrix(yaw, pitch, roll), np.asarray(pose6[3:6], dtype=np.float64)


def rotation_translation_to_pose6(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Rotation matrix and translation -> network pose vector (degrees, metres)."""
    angles = np.rad2deg(matrix_to_euler(rotation))
    return np.concatenate([angles, np.asarray(translation, dtype=np.float64).reshape(3)])


def angle_to_camera(rotation: np.ndarray, head_position: np.ndarray) -> float:
    """Angle (radians) between the head's forward axis and the ray from the head to the camera.

    ``head_position`` is any point on the ray from the camera through the head (a metric
    position, or a bearing from the pixel and intrinsics); only its direction matters.
    """
    forward = rotation[:, 0]
    to_camera = -np.asarray(head_position, dtype=np.float64)
    norm = np.linalg.norm(to_camera)
    if not np.isfinite(norm) or norm == 0.0:
        to_camera, norm = np.array([0.0, 0.0, -1.0]), 1.0
    cos = float(np.clip(forward @ to_camera / norm, -1.0, 1.0))
    return float(np.arccos(cos))


def attention_score(
    rotation: np.ndarray, head_position: np.ndarray, max_angle_rad: float = np.pi / 2
) -> float:
    """Score how directly the head faces the camera: 1 looking at it, 0 at ``max_angle_rad``.

    Linear in the angle so that a user can read a score of 0.5 as "half-way to looking away".
    """
    return float(np.clip(1.0 - angle_to_camera(rotation, head_position) / max_angle_rad, 0.0, 1.0))


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """Convert a rotation matrix to a unit quaternion ``(x, y, z, w)`` with ``w >= 0``.

    Shepperd's method: pick the largest of the four squared components to divide by, so the
    result stays accurate near 180-degree rotations where ``w`` vanishes.
    """
    r = np.asarray(rotation, dtype=np.float64)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    candidates = (trace, r[0, 0], r[1, 1], r[2, 2])
    largest = int(np.argmax(candidates))
    if largest == 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = ((r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4)
    elif largest == 1:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = (s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s)
    elif largest == 2:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = ((r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s)
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = ((r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s)
    quaternion = np.asarray(q) / np.linalg.norm(q)
    if quaternion[3] < 0:
        quaternion = -quaternion
    return tuple(float(v) for v in quaternion)


def quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Return the rotation matrix of a quaternion ``(x, y, z, w)``.

    The inverse of :func:`rotation_to_quaternion`. The quaternion is normalised first: one
    read from a message may be off unit length.
    """
    q = np.array([x, y, z, w], dtype=np.float64)
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
