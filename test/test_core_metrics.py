"""Known-value tests of headpose_ros.core.metrics (pure numpy, no data needed)."""

import numpy as np
import pytest

from headpose_ros.core.landmarks import IBUG68
from headpose_ros.core.metrics import (
    auc_and_failure_rate,
    cumulative_error_curve,
    landmark_normaliser,
    nme_per_face,
    pose_errors,
    recall_at_precision,
)


def _face() -> np.ndarray:
    points = np.zeros((68, 2))
    points[:, 1] = np.linspace(0.0, 50.0, 68)
    points[IBUG68.right_outer_eye_corner] = [0.0, 10.0]
    points[IBUG68.left_outer_eye_corner] = [40.0, 10.0]
    return points


def test_normalisers():
    face = _face()[None]
    assert landmark_normaliser(face, "interocular")[0] == pytest.approx(40.0)
    assert landmark_normaliser(face, "box_height")[0] == pytest.approx(50.0)
    right = face[0, list(IBUG68.right_eye)].mean(axis=0)
    left = face[0, list(IBUG68.left_eye)].mean(axis=0)
    assert landmark_normaliser(face, "interpupil")[0] == pytest.approx(
        np.linalg.norm(right - left)
    )
    with pytest.raises(ValueError, match="unknown normaliser"):
        landmark_normaliser(face, "diagonal")


def test_nme_is_the_masked_mean_error_over_the_normaliser():
    gt = np.stack([_face(), _face()])
    pred = gt.copy()
    pred[0, :10] += [3.0, 4.0]  # 10 landmarks off by 5 px
    mask = np.ones((2, 68))
    mask[1] = 0
    errors = nme_per_face(pred, gt, mask, np.array([40.0, 40.0]))
    assert errors[0] == pytest.approx(10 * 5.0 / 68 / 40.0)
    assert np.isnan(errors[1])  # nothing annotated: undefined, not zero
    mask[0, :10] = 0
    assert nme_per_face(pred, gt, mask, np.array([40.0, 40.0]))[0] == 0.0
    with pytest.raises(ValueError):
        nme_per_face(pred[:, :5], gt, None, np.ones(2))


def test_ced_auc_and_failure_rate():
    errors = np.array([0.0, 0.02, 0.04, 0.10, np.nan])
    x, y = cumulative_error_curve(errors, 0.08, steps=5)
    np.testing.assert_allclose(x, [0.0, 0.02, 0.04, 0.06, 0.08])
    np.testing.assert_allclose(y, [0.25, 0.5, 0.75, 0.75, 0.75])
    auc, failures = auc_and_failure_rate(np.array([0.0, 0.0]), 0.08)
    assert auc == pytest.approx(1.0) and failures == 0.0
    auc, failures = auc_and_failure_rate(np.array([0.04, 0.2]), 0.08, steps=10001)
    assert auc == pytest.approx(0.25, abs=1e-3) and failures == 0.5
    with pytest.raises(ValueError):
        auc_and_failure_rate(np.array([np.nan]))


def test_pose_mae_wraps_angles_and_bins_by_ground_truth_yaw():
    gt = np.array([[10.0, 0.0, 179.0], [45.0, 5.0, 0.0], [-70.0, 0.0, 0.0], [90.0, 0.0, 0.0]])
    pred = np.array([[12.0, 1.0, -179.0], [40.0, 5.0, 3.0], [-60.0, 0.0, 0.0], [80.0, 0.0, 0.0]])
    result = pose_errors(pred, gt)
    np.testing.assert_allclose(result.abs_errors[0], [2.0, 1.0, 2.0])
    assert result.mae["yaw"] == pytest.approx((2 + 5 + 10 + 10) / 4)
    assert result.mae["mean"] == pytest.approx(result.abs_errors.mean())
    bins = result.by_yaw_bin()
    assert [b["count"] for b in bins.values()] == [
        1,
        1,
        2,
    ]  # |yaw| = 90 falls in the closed last bin
    assert bins["[60,90]"]["yaw"] == pytest.approx(10.0)
    empty = pose_errors(pred[:1], gt[:1]).by_yaw_bin()
    assert empty["[30,60)"]["count"] == 0 and np.isnan(empty["[30,60)"]["mean"])


def test_recall_at_precision_known_ranking():
    # Ranked by score: P P N P N N P. Precision after each: 1, 1, .67, .75, .6, .5, .57.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    positive = np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool)
    recall, threshold = recall_at_precision(scores, positive, 0.8)
    assert recall == pytest.approx(0.5) and threshold == pytest.approx(0.8)
    recall, threshold = recall_at_precision(scores, positive, 0.75)
    assert recall == pytest.approx(0.75) and threshold == pytest.approx(0.6)
    assert recall_at_precision(scores, np.zeros(7, bool)) == (0.0, float("inf"))
    # Tied scores are one threshold: both tied items count together.
    recall, _ = recall_at_precision(np.array([0.9, 0.5, 0.5]), np.array([True, True, False]), 0.8)
    assert recall == pytest.approx(0.5)
