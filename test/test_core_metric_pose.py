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


def test_pnp_through_every_distortion_model() -> None:
    rotation, t = euler_to_matrix(0.4, -0.2, 0.1), np.array([0.2, -0.1, 0.9])
    rvec, _ = cv2.Rodrigues(rotation)
    cases = {
        "plumb_bob": np.array([0.1, -0.05, 0.001, 0.0005, 0.01]),
        "rational_polynomial": np.array([0.1, -0.05, 0.001, 0.0005, 0.01, 0.02, -0.01, 0.005]),
        "equidistant": np.array([0.05, -0.02, 0.01, -0.005]),
    }
    for model, coefficients in cases.items():
        camera = camera_from_intrinsics(K, coefficients, model)
        assert camera.model == model
        if model == "equidistant":
            pixels = cv2.fisheye.projectPoints(FACE_M.reshape(-1, 1, 3), rvec, t, K, coefficients)
            pixels = pixels[0].reshape(-1, 2)
        else:
            pixels = cv2.projectPoints(FACE_M, rvec, t, K, coefficients)[0].reshape(-1, 2)
        solved = solve_metric_pose(pixels, np.ones(68), FACE_M, camera)
        assert isinstance(solved, MetricPose), model
        np.testing.assert_allclose(solved.translation, t, atol=1e-4, err_msg=model)
        assert solved.reprojection_error_px < 1e-3, model
        # Read as plumb_bob, the fisheye coefficients would put the head elsewhere.
        if model == "equidistant":
            wrong = solve_metric_pose(
                pixels, np.ones(68), FACE_M, camera_from_intrinsics(K, coefficients, "plumb_bob")
            )
            assert np.linalg.norm(wrong.translation - t) > 1e-3


@pytest.mark.parametrize(
    ("model", "coefficients", "reason", "message"),
    [
        ("inverse_brown_conrady", np.zeros(5), "unsupported_model", "not supported"),
        ("bogus", np.zeros(0), "unsupported_model", "'bogus'"),
        ("", np.array([0.1, 0, 0, 0, 0]), "unsupported_model", "''"),
        ("equidistant", np.zeros(5), "distortion_count", "equidistant takes 4"),
        ("rational_polynomial", np.zeros(5), "distortion_count", "takes 8"),
        ("plumb_bob", np.zeros(8), "distortion_count", "takes 0 or 4 or 5"),
    ],
)
def test_other_distortion_models_are_refused_with_the_reason(
    model: str, coefficients: np.ndarray, reason: str, message: str
) -> None:
    with pytest.raises(IntrinsicsError, match=message) as refused:
        camera_from_intrinsics(K, coefficients, model)
    assert refused.value.reason == reason


def test_an_empty_model_name_without_distortion_is_a_pinhole() -> None:
    assert camera_from_intrinsics(K, np.zeros(5), "").model == "plumb_bob"
    assert camera_from_intrinsics(K, np.zeros(8)).model == "rational_polynomial"


def test_intrinsics_fit_only_their_image_size_or_a_resize_of_it() -> None:
    camera = camera_from_intrinsics(K, np.zeros(5), size=(640, 480))
    assert camera.for_image(640, 480) == (camera, "")
    assert camera_from_intrinsics(K).for_image(1280, 720)[1] == "", "unknown size: any image"
    half, note = camera.for_image(320, 240)
    assert "640x480" in note and "320x240" in note and "K scaled" in note
    # Pixel centres map as in cv2.resize: x' = (x + 0.5) * s - 0.5.
    np.testing.assert_allclose(half.matrix, [[300, 0, 159.75], [0, 300, 119.75], [0, 0, 1]])
    for width, height in ((1280, 720), (640, 360), (641, 480), (320, 480)):
        with pytest.raises(IntrinsicsError, match=f"640x480.*{width}x{height}") as refused:
            camera.for_image(width, height)
        assert refused.value.reason == "size_mismatch"
    # A resize that rounded one side is still a resize.
    assert "K scaled" in camera_from_intrinsics(K, size=(1281, 721)).for_image(640, 360)[1]


def test_a_resized_image_gives_the_same_distance() -> None:
    rotation, t = euler_to_matrix(0.1, 0.0, 0.0), np.array([0.05, 0.0, 1.0])
    pixels = project(rotation, t, np.zeros(5))
    full = camera_from_intrinsics(K, np.zeros(5), size=(640, 480))
    half, _ = full.for_image(320, 240)
    solved = solve_metric_pose((pixels + 0.5) * 0.5 - 0.5, np.ones(68), FACE_M, half)
    np.testing.assert_allclose(solved.translation, t, atol=1e-4)


def test_binning_and_region_of_interest_describe_the_sent_image() -> None:
    sensor = np.array([[1200.0, 0.0, 640.0], [0.0, 1200.0, 480.0], [0.0, 0.0, 1.0]])
    binned = camera_from_intrinsics(sensor, size=(1280, 960), binning=(2, 2))
    np.testing.assert_allclose(binned.matrix, [[600, 0, 320], [0, 600, 240], [0, 0, 1]])
    assert (binned.width, binned.height) == (640, 480)
    cropped = camera_from_intrinsics(sensor, size=(1280, 960), roi=(320, 240, 640, 480))
    np.testing.assert_allclose(cropped.matrix[:2, 2], [320.0, 240.0])
    assert (cropped.width, cropped.height) == (640, 480)
    with pytest.raises(IntrinsicsError, match="leaves the 1280x960 image") as refused:
        camera_from_intrinsics(sensor, size=(1280, 960), roi=(1000, 0, 640, 480))
    assert refused.value.reason == "bad_roi"
