"""Training faces: caching, splits by photograph, yaw-balanced sampling, pose labels."""

import cv2
import numpy as np

from headpose_ros.core.crop import apply_affine, crop_affine, square_box_from_landmarks
from headpose_training.data import iter_300w
from headpose_training.faces import (
    FaceSet,
    draw_epoch,
    label_poses,
    load_300w_faces,
    load_aflw_faces,
    split_by_group,
)


def _faces(source: str, yaw_label: np.ndarray) -> FaceSet:
    """A FaceSet with only what sampling reads: yaw labels (or poses) and groups."""
    count = len(yaw_label)
    empty = np.zeros((count, 68))
    poses = np.zeros((count, 6))
    poses[:, 0] = np.nan_to_num(yaw_label)
    return FaceSet(
        source=source,
        names=[f"{source}{i}" for i in range(count)],
        images=np.zeros((count, 4, 4, 3), np.uint8),
        boxes=np.tile([2.0, 2.0, 4.0], (count, 1)),
        landmarks=np.zeros((count, 68, 2)),
        mask=empty,
        visibility=empty,
        visibility_mask=empty,
        yaw_label=yaw_label,
        pnp_points=np.zeros((count, 68, 2)),
        pnp_weights=np.eye(70)[:68],
        groups=np.arange(count),
        border_mode=cv2.BORDER_CONSTANT,
        poses=poses,
        pose_mask=np.ones(count),
    )


def test_split_keeps_every_copy_of_a_photograph_on_one_side():
    groups = np.repeat(np.arange(50), 3)  # 50 photographs, three copies each
    train, val = split_by_group(groups, 0.2, seed=1)
    assert not set(groups[train]) & set(groups[val])
    assert len(train) + len(val) == 150 and 0.18 <= len(val) / 150 <= 0.25
    np.testing.assert_array_equal(val, split_by_group(groups, 0.2, seed=1)[1])  # seeded


def test_epoch_draws_follow_source_weights_and_balance_yaw_bins():
    rng = np.random.default_rng(0)
    frontal_heavy = np.concatenate([rng.uniform(-29, 29, 900), rng.uniform(30, 59, 90)])
    aflw = _faces("aflw", np.concatenate([frontal_heavy, rng.uniform(60, 95, 10)]))
    w300 = _faces("300w", np.full(200, np.nan))  # no yaw label: binned by pose label (0)
    draws = draw_epoch([w300, aflw], [0.4, 0.6], [30.0, 60.0], 6000, rng)
    sources = np.array([s for s, _ in draws])
    assert len(draws) == 6000 and abs((sources == 0).mean() - 0.4) < 0.03
    aflw_yaw = np.abs(aflw.yaw_label[[i for s, i in draws if s == 1]])
    shares = np.bincount(np.digitize(aflw_yaw, [30.0, 60.0]), minlength=3) / len(aflw_yaw)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.03)  # 10 profile faces get a third


def test_300w_faces_are_cached_and_keep_landmarks_on_the_crop(tiny_data, tmp_path):
    folder = tiny_data / "300w_subset" / "afw"
    faces = load_300w_faces([folder], 32, 0.3, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("300w_*.npz"))) == 1
    again = load_300w_faces([folder], 32, 0.3, tmp_path / "cache")
    np.testing.assert_array_equal(faces.images, again.images)
    sample = next(iter_300w(folder))
    expected = apply_affine(
        sample.landmarks, crop_affine(square_box_from_landmarks(sample.landmarks), 48)
    )
    np.testing.assert_allclose(
        apply_affine(faces.landmarks[0], crop_affine(faces.box(0), 48)), expected, atol=1e-6
    )
    assert faces.mask.all() and faces.visibility_mask.all() and np.isnan(faces.yaw_label).all()


def test_aflw_faces_carry_their_labels_and_replicate_their_border(tiny_data, tmp_path):
    faces = load_aflw_faces(tiny_data / "aflw_crops", 0.3, tmp_path / "cache")
    assert len(faces) == 48 and faces.images.shape[1:] == (120, 120, 3)
    assert faces.border_mode == cv2.BORDER_REPLICATE
    assert faces.mask.sum(axis=1).max() <= 10 and faces.visibility_mask.sum(axis=1).min() == 10
    assert (faces.visibility_mask > faces.mask).any()  # hidden points: label, no position
    assert np.abs(faces.yaw_label).max() >= 60
    subset = faces.subset([3, 1])
    assert subset.names == [faces.names[3], faces.names[1]]
    np.testing.assert_array_equal(subset.boxes, faces.boxes[[3, 1]])


def test_pose_labels_keep_the_aflw_yaw_and_are_cached(tiny_data, tmp_path):
    from headpose_training.mean_face import estimate_mean_face

    shapes = np.stack([s.landmarks for s in iter_300w(tiny_data / "300w_subset" / "helen_train")])
    model = np.vstack([estimate_mean_face(shapes), [[-80.0, -70.0, -40.0], [-80.0, 70.0, -40.0]]])
    faces = load_aflw_faces(tiny_data / "aflw_crops", 0.3, None)
    labelled = label_poses(faces, model, 64, tmp_path / "cache")
    known = labelled.pose_mask > 0
    assert known.mean() > 0.9
    np.testing.assert_allclose(labelled.poses[known, 0], faces.yaw_label[known])
    assert np.all(labelled.poses[known, 5] > 0)  # in front of the crop camera
    again = label_poses(faces, model, 64, tmp_path / "cache")
    np.testing.assert_array_equal(again.poses, labelled.poses)
    assert len(list((tmp_path / "cache").glob("poses_aflw_*.npz"))) == 1


def test_a_face_set_with_too_few_points_gets_no_pose(tiny_data):
    faces = load_aflw_faces(tiny_data / "aflw_crops", 0.3, None).subset([0])
    faces.pnp_points[:] = np.nan
    labelled = label_poses(faces, np.zeros((70, 3)), 64)
    assert labelled.pose_mask[0] == 0 and labelled.poses[0, 5] == 0
