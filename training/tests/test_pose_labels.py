"""Pose labels by PnP in the crop camera, with ray-relative angles."""

import numpy as np
import pytest

from headpose_ros.core.geometry import crop_camera_matrix, project_points
from headpose_training.pose_labels import (
    pose_from_landmarks,
    pose_with_yaw,
    ray_relative_pose,
    rotation_of_pose,
)

CROP = 128


def _project(face, pose):
    return project_points(face, rotation_of_pose(pose), pose[3:6], crop_camera_matrix(CROP))


def test_ray_relative_angles_round_trip():
    pose = np.array([35.0, -12.0, 20.0, 0.05, -0.03, 0.4])
    np.testing.assert_allclose(ray_relative_pose(rotation_of_pose(pose), pose[3:6]), pose)


def test_pnp_recovers_a_known_pose(synthetic_face):
    pose = np.array([25.0, -10.0, 8.0, 0.01, -0.02, 0.45])
    np.testing.assert_allclose(
        pose_from_landmarks(_project(synthetic_face, pose), synthetic_face, CROP), pose, atol=1e-4
    )


def test_the_same_look_off_centre_gives_the_same_angles(synthetic_face):
    """Ray-relative angles describe what the crop shows, wherever the head sits in it."""
    centred = np.array([30.0, 5.0, -10.0, 0.0, 0.0, 0.45])
    off_centre = centred + [0, 0, 0, 0.08, -0.05, 0]
    # The same look: the off-centre head's camera-frame rotation includes its ray's turn.
    for pose in (centred, off_centre):
        estimate = pose_from_landmarks(_project(synthetic_face, pose), synthetic_face, CROP)
        np.testing.assert_allclose(estimate[:3], centred[:3], atol=1e-4)


def test_pose_with_yaw_keeps_the_label_and_solves_the_rest(synthetic_face):
    pose = np.array([-60.0, 12.0, -5.0, 0.0, 0.01, 0.5])
    points = _project(synthetic_face, pose)
    np.testing.assert_allclose(pose_with_yaw(points, synthetic_face, CROP, -60.0), pose, atol=1e-4)
    # With a yaw label off by 5 degrees the other parameters absorb the rest; yaw stays put.
    shifted = pose_with_yaw(points, synthetic_face, CROP, -55.0)
    assert shifted[0] == -55.0 and abs(shifted[1] - pose[1]) < 5.0


def test_pnp_needs_four_points(synthetic_face):
    points = _project(synthetic_face, np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.4]))
    points[3:] = np.nan
    with pytest.raises(ValueError, match="at least 4"):
        pose_from_landmarks(points, synthetic_face, CROP)
