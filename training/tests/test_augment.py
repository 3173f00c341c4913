import cv2
import numpy as np
import pytest

from headpose_ros.core.crop import SquareBox, apply_affine, crop_affine, square_box_from_landmarks
from headpose_ros.core.geometry import (
    crop_camera_matrix,
    pose6_to_rotation_translation,
    project_points,
)
from headpose_ros.core.landmarks import IBUG68
from headpose_training.augment import (
    AugmentConfig,
    FaceLabels,
    inside_crop,
    make_sample,
    mirror_pose,
    paint_occluder,
    scale_hsv,
)
from headpose_training.pose_labels import pose_from_landmarks

SIZE = 64
PLAIN = AugmentConfig(enabled=False)


def _labels(points, face, box, mask=None, pose_known=True):
    """Labels of a face whose 68 points are all visible, pose by PnP in the plain crop."""
    mask = np.ones(68) if mask is None else mask
    plain = apply_affine(points, crop_affine(box, SIZE))
    pose = pose_from_landmarks(plain, face, SIZE) if pose_known else np.full(6, np.nan)
    return FaceLabels(points, mask, np.ones(68), mask.copy(), pose, pose_known)


@pytest.fixture
def face_patch(synthetic_face):
    """A black patch with a bright dot on each landmark of a face turned 20 degrees."""
    rotation, translation = pose6_to_rotation_translation(
        np.array([20.0, 5.0, 0.0, 0.0, 0.0, 0.45])
    )
    points = project_points(synthetic_face, rotation, translation, crop_camera_matrix(200))
    patch = np.zeros((200, 200, 3), np.uint8)
    for x, y in points:
        cv2.circle(patch, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)
    box = square_box_from_landmarks(points)
    box = SquareBox(box.cx, box.cy, box.side)
    return patch, box, _labels(points, synthetic_face, box), synthetic_face


def _only(**changes) -> AugmentConfig:
    """Geometry switched off except for the listed changes; no colour change, no occluder."""
    base = dict(
        max_rotation_deg=0.0,
        max_scale=0.0,
        max_shift=0.0,
        mirror_probability=0.0,
        hsv_range=(1.0, 1.0),
        occluder_probability=0.0,
    )
    return AugmentConfig(**{**base, **changes})


def test_plain_sample_is_the_inference_crop(face_patch):
    patch, box, labels, _ = face_patch
    sample = make_sample(patch, box, labels, SIZE, PLAIN, np.random.default_rng(0))
    np.testing.assert_allclose(
        sample.landmarks, apply_affine(labels.landmarks, crop_affine(box, SIZE))
    )
    assert sample.mask.sum() == 68 and sample.visibility.sum() == 68
    assert sample.crop.shape == (SIZE, SIZE, 3) and sample.pose_mask == 1.0
    np.testing.assert_allclose(sample.pose, labels.pose, atol=1e-9)


def test_augmented_landmarks_stay_on_their_dots(face_patch):
    patch, box, labels, _ = face_patch
    rng = np.random.default_rng(5)
    config = _only(max_rotation_deg=45.0, max_scale=0.15, max_shift=0.05, mirror_probability=0.5)
    for _ in range(10):
        sample = make_sample(patch, box, labels, SIZE, config, rng)
        visible = sample.mask > 0
        assert visible.sum() > 50
        xy = np.round(sample.landmarks[visible]).astype(int)
        assert np.all(sample.crop[xy[:, 1], xy[:, 0]].max(axis=1) > 100)


def test_carried_pose_matches_pnp_of_the_augmented_landmarks(face_patch):
    """The pose label carried through augmentation agrees with PnP of the augmented points.

    It is carried through rotation, zoom, shift and mirror without a PnP per sample.

    Rotation about the crop centre and mirroring are exact; zoom and shift keep the
    ray-relative angles, which perspective bends by well under a degree at these sizes.
    """
    patch, box, labels, face = face_patch
    rng = np.random.default_rng(11)
    config = _only(max_rotation_deg=45.0, max_scale=0.15, max_shift=0.05, mirror_probability=0.5)
    for _ in range(20):
        sample = make_sample(patch, box, labels, SIZE, config, rng)
        # The synthetic face is symmetric, so mirrored samples fit the same face.
        estimate = pose_from_landmarks(sample.landmarks, face, SIZE)
        np.testing.assert_allclose(estimate[:3], sample.pose[:3], atol=1.0)
        np.testing.assert_allclose(estimate[3:], sample.pose[3:], rtol=0.03, atol=3e-3)


def test_mirroring_flips_image_labels_and_pose_signs(face_patch):
    patch, box, labels, _ = face_patch
    plain = make_sample(patch, box, labels, SIZE, _only(), np.random.default_rng(0))
    mirrored = make_sample(
        patch, box, labels, SIZE, _only(mirror_probability=1.0), np.random.default_rng(0)
    )
    # Same pixels mirrored, up to OpenCV's fixed-point interpolation rounding.
    assert np.abs(mirrored.crop.astype(int) - plain.crop[:, ::-1]).max() <= 1
    perm = list(IBUG68.flip_permutation)
    np.testing.assert_allclose(
        mirrored.landmarks[:, 0], SIZE - 1 - plain.landmarks[perm, 0], atol=1e-9
    )
    np.testing.assert_allclose(mirrored.landmarks[:, 1], plain.landmarks[perm, 1], atol=1e-9)
    np.testing.assert_allclose(mirrored.pose[[0, 2]], -plain.pose[[0, 2]], atol=1e-9)
    np.testing.assert_allclose(mirrored.pose[[1, 4, 5]], plain.pose[[1, 4, 5]], atol=1e-9)
    np.testing.assert_allclose(mirror_pose(mirrored.pose, SIZE), plain.pose, atol=1e-9)


def test_in_plane_rotation_turns_roll(face_patch):
    patch, box, labels, _ = face_patch
    plain = make_sample(patch, box, labels, SIZE, _only(), np.random.default_rng(0))
    seed = next(s for s in range(100) if abs(np.random.default_rng(s).uniform(-45.0, 45.0)) > 20)
    angle = np.rad2deg(np.random.default_rng(seed).uniform(-np.deg2rad(45), np.deg2rad(45)))
    rotated = make_sample(
        patch, box, labels, SIZE, _only(max_rotation_deg=45.0), np.random.default_rng(seed)
    )
    # A positive window rotation turns the face counter-clockwise on screen: the top of the
    # head goes to the subject's right shoulder, which geometry.py calls positive roll.
    assert abs((rotated.pose[2] - plain.pose[2]) - angle) < 1.5


def test_landmarks_outside_the_crop_get_mask_zero(face_patch):
    patch, box, labels, _ = face_patch
    small = SquareBox(box.cx - box.side / 4, box.cy - box.side / 4, box.side / 2)
    sample = make_sample(patch, small, labels, SIZE, PLAIN, np.random.default_rng(0))
    inside = inside_crop(sample.landmarks, SIZE)
    assert 0 < inside.sum() < 68
    np.testing.assert_array_equal(sample.mask, inside.astype(float))
    np.testing.assert_array_equal(sample.visibility_mask, inside.astype(float))


def test_unannotated_landmarks_stay_masked(face_patch):
    patch, box, labels, face = face_patch
    mask = np.ones(68)
    mask[[3, 40]] = 0
    masked = _labels(labels.landmarks, face, box, mask)
    sample = make_sample(
        patch, box, masked, SIZE, _only(mirror_probability=1.0), np.random.default_rng(0)
    )
    perm = np.asarray(IBUG68.flip_permutation)
    assert sample.mask[perm[3]] == 0 and sample.mask[perm[40]] == 0 and sample.mask.sum() == 66


def test_hidden_points_without_position_keep_their_visibility_label(face_patch):
    """AFLW: a hidden point has no position but its label (not visible) is known."""
    patch, box, labels, face = face_patch
    landmarks = labels.landmarks.copy()
    landmarks[[36, 8]] = np.nan
    mask, visibility = np.ones(68), np.ones(68)
    mask[[36, 8]] = visibility[[36, 8]] = 0
    hidden = FaceLabels(landmarks, mask, visibility, np.ones(68), labels.pose)
    sample = make_sample(patch, box, hidden, SIZE, PLAIN, np.random.default_rng(0))
    assert sample.mask[[36, 8]].sum() == 0 and sample.visibility[[36, 8]].sum() == 0
    assert sample.visibility_mask[[36, 8]].all()


def test_occluded_points_are_labelled_hidden(face_patch):
    patch, box, labels, _ = face_patch
    rng = np.random.default_rng(3)
    config = _only(occluder_probability=1.0)
    sample = make_sample(patch, box, labels, SIZE, config, rng)
    covered = sample.visibility == 0
    assert covered.any() and sample.visibility_mask[covered].all() and sample.mask[covered].all()


def test_a_face_without_pose_label_gets_none(face_patch):
    patch, box, labels, face = face_patch
    unknown = _labels(labels.landmarks, face, box, pose_known=False)
    sample = make_sample(patch, box, unknown, SIZE, AugmentConfig(), np.random.default_rng(1))
    assert sample.pose_mask == 0.0 and np.isnan(sample.pose).all()


def test_occluder_hides_exactly_the_landmarks_it_covers():
    rng = np.random.default_rng(2)
    for _ in range(20):
        image = np.zeros((80, 80, 3), np.uint8)
        ys, xs = np.mgrid[2:80:9, 2:80:9]
        points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(float)
        visibility = paint_occluder(image, points, 80, (0.15, 0.5), rng)
        painted = np.argwhere(np.any(image != 0, axis=2))
        (y0, x0), (y1, x1) = painted.min(axis=0), painted.max(axis=0)
        covered = (
            (points[:, 0] >= x0)
            & (points[:, 0] <= x1)
            & (points[:, 1] >= y0)
            & (points[:, 1] <= y1)
        )
        np.testing.assert_array_equal(visibility == 0, covered)


def test_hsv_scaling_of_one_is_identity_and_value_scaling_darkens():
    crop = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    same = scale_hsv(crop, np.ones(3))
    hsv_roundtrip = cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2HSV), cv2.COLOR_HSV2BGR)
    np.testing.assert_array_equal(same, hsv_roundtrip)
    assert scale_hsv(crop, np.array([1.0, 1.0, 0.5])).mean() < crop.mean() * 0.6


def test_full_augmentation_labels_are_consistent(face_patch):
    patch, box, labels, _ = face_patch
    rng = np.random.default_rng(9)
    config = AugmentConfig(blur_probability=0.5)
    for _ in range(20):
        sample = make_sample(patch, box, labels, SIZE, config, rng)
        assert np.all((sample.mask == 0) | inside_crop(sample.landmarks, SIZE))
        assert set(np.unique(sample.visibility)) <= {0.0, 1.0}
        assert np.all(np.isfinite(sample.pose))
