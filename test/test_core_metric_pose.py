"""PnP on synthetic projections, intrinsics validation, viewing-ray rotation, attention."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from model_factory import synthetic_mean_face_mm

from headpose_ros.core.geometry import attention_score, euler_to_matrix
from headpose_ros.core.metric_pose import (
    IntrinsicsError,
    MetricPose,
    camera_from_intrinsics,
    ray_rotation,
    solve_metric_pose,
)

FACE_M = synthetic_mean_face_mm() / 1000.0
K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])


def project(rotation: np.ndarray, translation: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(rotation)
    points, _ = cv2.projectPoints(FACE_M, rvec, translation, K, distortion)
    return points.reshape(-1, 2)


@pytest.mark.parametrize(
    ("angles_deg", "translation"),
    [
        ((0, 0, 0), (0.0, 0.0, 0.8)),
        ((30, -10, 5), (0.15, -0.05, 1.2)),
        ((-45, 15, -10), (-0.2, 0.1, 2.0)),
    ],
)
@pytest.mark.parametrize("distorted", [False, True])
def test_pnp_recovers_pose(angles_deg: tuple, translation: tuple, distorted: bool) -> None:
    distortion = np.array([0.1, -0.05, 0.001, 0.0005, 0.0]) if distorted else np.zeros(5)
    rotation = euler_to_matrix(*np.deg2rad(angles_deg))
    t = np.array(translation)
    pixels = project(rotation, t, distortion)
    camera = camera_from_intrinsics(K, distortion)
    solved = solve_metric_pose(pixels, np.ones(68), FACE_M, camera)
    assert isinstance(solved, MetricPose)
    np.testing.assert_allclose(solved.translation, t, atol=1e-4)
    angle = np.rad2deg(np.arccos(np.clip((np.trace(solved.rotation.T @ rotation) - 1) / 2, -1, 1)))
    assert angle < 0.05
    assert solved.reprojection_error_px < 1e-3


def test_pnp_ignores_occluded_landmarks() -> None:
    rotation, t = euler_to_matrix(0.3, 0.0, 0.0), np.array([0.0, 0.0, 1.0])
    pixels = project(rotation, t, np.zeros(5))
    visibility = np.ones(68)
    pixels[:10] += 50.0  # wrong positions, flagged occluded
    visibility[:10] = 0.1
    solved = solve_metric_pose(pixels, visibility, FACE_M, camera_from_intrinsics(K))
    assert isinstance(solved, MetricPose)
    assert solved.points_used == 58
    np.testing.assert_allclose(solved.translation, t, atol=1e-4)


def test_pnp_reports_too_few_points() -> None:
    pixels = project(np.eye(3), np.array([0, 0, 1.0]), np.zeros(5))
    result = solve_metric_pose(pixels, np.zeros(68), FACE_M, camera_from_intrinsics(K))
    assert isinstance(result, str) and "visible" in result


@pytest.mark.parametrize(
    "matrix",
    [
        np.zeros((3, 3)),
        np.full((3, 3), np.nan),
        np.diag([0.0, 600.0, 1.0]),
        np.eye(2),
        np.where(K > 0, np.inf, 0.0),
    ],
)
def test_bad_intrinsics_raise_clear_errors(matrix: np.ndarray) -> None:
    with pytest.raises(IntrinsicsError):
        camera_from_intrinsics(matrix)


def test_bad_distortion_is_rejected() -> None:
    with pytest.raises(IntrinsicsError):
        camera_from_intrinsics(K, [0.1, np.nan, 0, 0, 0])
    with pytest.raises(IntrinsicsError):
        camera_from_intrinsics(K, [0.1, 0.2, 0.3])


def test_ray_rotation_turns_optical_axis_onto_ray() -> None:
    for bearing in ([0.0, 0.0, 1.0], [0.3, -0.2, 1.0], [-1.0, 0.5, 0.4]):
        rotation = ray_rotation(np.array(bearing))
        np.testing.assert_allclose(
            rotation @ [0, 0, 1], np.array(bearing) / np.linalg.norm(bearing), atol=1e-12
        )
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == pytest.approx(1.0)


def test_attention_is_one_facing_and_zero_turned_away() -> None:
    assert attention_score(euler_to_matrix(0, 0, 0), np.array([0, 0, 1.0])) == pytest.approx(1.0)
    assert attention_score(
        euler_to_matrix(np.pi / 2, 0, 0), np.array([0, 0, 1.0])
    ) == pytest.approx(0.0)
    assert attention_score(
        euler_to_matrix(np.pi / 4, 0, 0), np.array([0, 0, 1.0])
    ) == pytest.approx(0.5)
    # Off-axis face turned to look at the camera: forward axis along -position.
    position = np.array([0.5, 0.0, 1.0])
    facing = ray_rotation(position) @ euler_to_matrix(0, 0, 0)
    assert attention_score(facing, position) == pytest.approx(1.0)
