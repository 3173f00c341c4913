"""The mean 3D face: factorisation, head frame, and the depth given by yaw labels."""

import numpy as np
import pytest

from headpose_ros.core.geometry import crop_camera_matrix, project_points
from headpose_ros.core.landmarks import IBUG68
from headpose_training.data import iter_300w
from headpose_training.mean_face import (
    BIOCULAR_BREADTH_MM,
    EAR_LOBES,
    MODEL_POINTS,
    FaceObservation,
    estimate_mean_face,
    refine_mean_face,
    to_head_frame,
)
from headpose_training.pose_labels import rotation_of_pose

CROP = 128


def _with_ear_lobes(face):
    ears = np.array([[-0.09, -0.07, -0.04], [-0.09, 0.07, -0.04]])
    return np.vstack([face, ears])


def test_factorisation_recovers_a_face_seen_over_a_wide_yaw_range(synthetic_face):
    truth = synthetic_face * 1000.0
    rng = np.random.default_rng(0)
    shapes = []
    for _ in range(200):
        pose = np.r_[rng.uniform([-50, -25, -30], [50, 25, 30]), 0, 0, 1]
        projected = (truth @ rotation_of_pose(pose).T)[:, :2] * rng.uniform(0.5, 2.0)
        shapes.append(projected + rng.uniform(0, 300, 2) + rng.normal(0, 0.3, projected.shape))
    face = estimate_mean_face(np.array(shapes))
    assert np.linalg.norm(face[36] - face[45]) == pytest.approx(BIOCULAR_BREADTH_MM)
    np.testing.assert_allclose(face, to_head_frame(truth), atol=1.5)


def test_head_frame_is_symmetric_and_upright(data_300w):
    shapes = np.stack([s.landmarks for s in iter_300w(data_300w / "afw")])
    face = estimate_mean_face(shapes)
    assert face[30, 0] > 10.0  # nose tip in front of the eyes
    assert face[8, 2] < -80.0  # chin well below the eyes
    np.testing.assert_allclose(face[list(IBUG68.flip_permutation)] * [1, -1, 1], face, atol=1e-9)


def _observations(model, rng, count, yaw_range, labelled, indices):
    weights = np.eye(MODEL_POINTS)[indices]
    observations = []
    for _ in range(count):
        pose = np.r_[
            rng.uniform(-yaw_range, yaw_range),
            rng.uniform(-15, 15),
            rng.uniform(-15, 15),
            rng.uniform(-0.02, 0.02, 2),
            rng.uniform(0.35, 0.5),
        ]
        points = project_points(
            model[indices], rotation_of_pose(pose), pose[3:6], crop_camera_matrix(CROP)
        )
        points += rng.normal(0.0, 0.3, points.shape)
        observations.append(FaceObservation(points, weights, pose[0] if labelled else None))
    return observations


def test_yaw_labels_give_the_face_its_depth(synthetic_face):
    """Start twice as deep as the truth (what near-frontal factorisation gets); recover it.

    Near-frontal faces without labels cannot tell depth from yaw; faces over a wide yaw range
    with yaw labels (as AFLW's) can.
    """
    truth = to_head_frame(_with_ear_lobes(synthetic_face)) / 1000.0
    rng = np.random.default_rng(1)
    sparse = [19, 24, 36, 39, 42, 45, 30, 48, 54, 8, *EAR_LOBES]
    observations = _observations(truth, rng, 120, 80.0, True, sparse)
    observations += _observations(truth, rng, 80, 25.0, False, list(range(68)))
    too_deep = to_head_frame(truth[:68] * [2.0, 1.0, 1.0])
    refined = refine_mean_face(too_deep, observations, CROP, iterations=2, progress=False)
    depth_error = np.abs(refined.model_mm[:, 0] - truth[:, 0] * 1000.0)
    assert np.median(depth_error) < 3.0 and depth_error.max() < 10.0
    assert refined.history[-1]["free_pnp_yaw_mae_deg"] < 2.0
