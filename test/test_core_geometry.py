"""Head-pose conventions: the documented signs hold and every conversion inverts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headpose_ros.core.geometry import (
    attention_score,
    crop_camera_matrix,
    euler_to_matrix,
    matrix_to_euler,
    pose6_to_rotation_translation,
    project_points,
    rotation_to_quaternion,
    rotation_translation_to_pose6,
)

NOSE_TIP = np.array([[0.1, 0.0, 0.0]])  # 10 cm in front of the head origin, metres
LEFT_EAR = np.array([[0.0, 0.08, 0.0]])  # subject's left
CAMERA = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
IN_FRONT = np.array([0.0, 0.0, 1.0])  # head 1 m in front of the camera


def project(points: np.ndarray, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0):
    return project_points(points, euler_to_matrix(yaw, pitch, roll), IN_FRONT, CAMERA)[0]


def test_facing_camera_points_the_nose_at_the_camera_and_the_left_ear_to_image_right() -> None:
    assert project(NOSE_TIP) == pytest.approx([320.0, 240.0])
    assert project(LEFT_EAR)[0] > 320.0


def test_sign_conventions_match_the_message_documentation() -> None:
    assert project(NOSE_TIP, yaw=0.3)[0] > 320.0  # yaw > 0: nose to the subject's left
    assert project(NOSE_TIP, pitch=0.3)[1] > 240.0  # pitch > 0: nose down
    top_of_head = np.array([[0.0, 0.0, 0.1]])
    assert project(top_of_head, roll=0.3)[0] < 320.0  # roll > 0: towards the right shoulder


angles = st.floats(-np.pi + 1e-3, np.pi - 1e-3)
pitches = st.floats(-np.pi / 2 + 1e-3, np.pi / 2 - 1e-3)


@given(angles, pitches, angles)
def test_euler_round_trip(yaw: float, pitch: float, roll: float) -> None:
    rotation = euler_to_matrix(yaw, pitch, roll)
    assert rotation @ rotation.T == pytest.approx(np.eye(3), abs=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    assert matrix_to_euler(rotation) == pytest.approx((yaw, pitch, roll), abs=1e-9)


def test_gimbal_lock_reports_zero_roll_and_the_same_rotation() -> None:
    rotation = euler_to_matrix(0.4, np.pi / 2, 0.1)
    yaw, pitch, roll = matrix_to_euler(rotation)
    assert roll == 0.0 and pitch == pytest.approx(np.pi / 2)
    assert euler_to_matrix(yaw, pitch, roll) == pytest.approx(rotation, abs=1e-9)


def test_pose6_round_trip_and_crop_camera() -> None:
    pose6 = np.array([20.0, -10.0, 5.0, 0.01, -0.02, 0.4])
    rotation, translation = pose6_to_rotation_translation(pose6)
    assert rotation_translation_to_pose6(rotation, translation) == pytest.approx(pose6)
    camera = crop_camera_matrix(128)
    assert camera[0, 0] == camera[1, 1] == 192.0 and camera[0, 2] == camera[1, 2] == 64.0


def test_attention_is_one_facing_the_camera_and_falls_linearly_to_zero() -> None:
    assert attention_score(euler_to_matrix(0, 0, 0), IN_FRONT) == pytest.approx(1.0)
    assert attention_score(euler_to_matrix(np.pi / 4, 0, 0), IN_FRONT) == pytest.approx(0.5)
    assert attention_score(euler_to_matrix(np.pi / 2, 0, 0), IN_FRONT) == pytest.approx(0.0)
    assert attention_score(euler_to_matrix(np.pi, 0, 0), IN_FRONT) == 0.0
    # A head off to the side that turns towards the camera is looking at it.
    off_axis = np.array([1.0, 0.0, 1.0])
    assert attention_score(euler_to_matrix(-np.pi / 4, 0, 0), off_axis) == pytest.approx(1.0)


def test_attention_without_a_usable_direction_assumes_the_optical_axis() -> None:
    facing = euler_to_matrix(0, 0, 0)
    assert attention_score(facing, np.zeros(3)) == pytest.approx(1.0)
    assert attention_score(facing, np.full(3, np.nan)) == pytest.approx(1.0)


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    # Independent textbook formula, to check the extraction against.
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


@given(angles, pitches, angles)
def test_quaternion_reproduces_the_rotation(yaw: float, pitch: float, roll: float) -> None:
    rotation = euler_to_matrix(yaw, pitch, roll)
    quaternion = rotation_to_quaternion(rotation)
    assert np.linalg.norm(quaternion) == pytest.approx(1.0) and quaternion[3] >= 0
    assert quaternion_to_matrix(*quaternion) == pytest.approx(rotation, abs=1e-9)


def test_quaternion_of_half_turns_is_accurate() -> None:
    for axis in np.eye(3):
        rotation = 2 * np.outer(axis, axis) - np.eye(3)  # 180 degrees about the axis
        assert quaternion_to_matrix(*rotation_to_quaternion(rotation)) == pytest.approx(rotation)
