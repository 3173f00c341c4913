import cv2
import numpy as np
import pytest
import scipy.io

from headpose_ros.core.crop import apply_affine, crop_affine, square_box_from_landmarks
from headpose_ros.core.geometry import (
    crop_camera_matrix,
    pose6_to_rotation_translation,
    project_points,
)
from headpose_ros.core.landmarks import IBUG68
from headpose_training.data import (
    BIOCULAR_BREADTH_MM,
    WFLW98_TO_IBUG68,
    build_patch_set,
    estimate_mean_face,
    iter_300w,
    load_300w_pts,
    load_aflw2000_mat,
    load_biwi_frame,
    load_cofw_mat,
    load_wflw_annotations,
    pose_from_landmarks,
    split_train_val,
)


def _image(path, size=(40, 50)):
    cv2.imwrite(str(path), np.full((*size, 3), 90, np.uint8))


def test_300w_pts_is_read_zero_based(tmp_path):
    points = np.arange(136, dtype=float).reshape(68, 2) + 1.0
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    (tmp_path / "face.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    _image(tmp_path / "face.jpg")
    np.testing.assert_allclose(load_300w_pts(tmp_path / "face.pts"), points - 1.0)
    (sample,) = list(iter_300w(tmp_path))
    assert sample.name == "face" and sample.image.shape == (40, 50, 3)
    assert sample.mask.sum() == 68 and sample.visibility is None


def test_300w_errors_name_the_file(tmp_path):
    (tmp_path / "bad.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(ValueError, match="bad.pts"):
        load_300w_pts(tmp_path / "bad.pts")
    (tmp_path / "bad.pts").write_text("version: 1\nn_points: 1\n{\n1 2\n}\n")
    with pytest.raises(FileNotFoundError, match="bad.pts"):
        list(iter_300w(tmp_path))


def test_300w_real_files(data_300w):
    sample = next(iter_300w(data_300w / "helen_test"))
    assert sample.landmarks.shape == (68, 2)
    height, width = sample.image.shape[:2]
    assert np.all((sample.landmarks >= -1) & (sample.landmarks <= [width, height]))


def test_aflw2000_mat_with_21_point_pt2d(tmp_path):
    pt3d = np.vstack([np.linspace(5, 30, 68), np.linspace(6, 35, 68), np.zeros(68)])
    pt3d[0, 3] = -1.0  # marked unusable
    pose = np.array([[0.1, -0.2, 0.3, 1.0, 2.0, 3.0, 0.5]])
    scipy.io.savemat(
        tmp_path / "image00002.mat",
        {"pt2d": np.zeros((2, 21)), "pt3d_68": pt3d, "Pose_Para": pose},
    )
    _image(tmp_path / "image00002.jpg")
    sample = load_aflw2000_mat(tmp_path / "image00002.mat")
    np.testing.assert_allclose(sample.landmarks[0], pt3d[:2, 0])
    assert sample.mask[3] == 0 and np.isnan(sample.landmarks[3]).all() and sample.mask.sum() == 67
    np.testing.assert_allclose(sample.pose_deg, np.rad2deg([-0.2, 0.1, 0.3]))


def test_300w_lp_mat_with_68_point_pt2d(tmp_path):
    pt2d = np.vstack([np.linspace(5, 30, 68), np.linspace(6, 35, 68)])
    scipy.io.savemat(tmp_path / "AFW_1_0.mat", {"pt2d": pt2d, "Pose_Para": np.zeros((1, 7))})
    _image(tmp_path / "AFW_1_0.jpg")
    np.testing.assert_allclose(load_aflw2000_mat(tmp_path / "AFW_1_0.mat").landmarks, pt2d.T)


def test_cofw_mat(tmp_path):
    images = np.empty((2, 1), dtype=object)
    images[0, 0] = np.full((30, 40), 7, np.uint8)  # grey, as many COFW images are
    images[1, 0] = np.full((30, 40, 3), 9, np.uint8)
    phis = np.zeros((2, 87))
    phis[:, :29] = np.arange(1, 30)
    phis[:, 29:58] = np.arange(2, 31)
    phis[0, 58 + 4] = 1  # landmark 4 of face 0 occluded
    scipy.io.savemat(tmp_path / "COFW_train.mat", {"IsTr": images, "phisTr": phis})
    first, second = load_cofw_mat(tmp_path / "COFW_train.mat", "Tr")
    assert first.image.shape == (30, 40, 3) and second.image.shape == (30, 40, 3)
    np.testing.assert_allclose(first.landmarks[:, 0], np.arange(29))
    np.testing.assert_allclose(first.landmarks[:, 1], np.arange(1, 30))
    assert (
        first.visibility[4] == 0 and first.visibility.sum() == 28 and second.visibility.sum() == 29
    )


def test_wflw_annotation_lines(tmp_path):
    _image(tmp_path / "a.jpg")
    coords = np.arange(196, dtype=float)
    line = " ".join(f"{v:g}" for v in coords) + " 1 2 30 40 0 1 0 0 1 0 a.jpg"
    (tmp_path / "list.txt").write_text(line + "\n\n" + line + "\n")
    samples = list(load_wflw_annotations(tmp_path / "list.txt", tmp_path))
    assert len(samples) == 2
    np.testing.assert_allclose(samples[0].landmarks, coords.reshape(98, 2))
    assert len(WFLW98_TO_IBUG68) == 68 and len(set(WFLW98_TO_IBUG68.tolist())) == 68
    (tmp_path / "short.txt").write_text("1 2 3 a.jpg\n")
    with pytest.raises(ValueError, match="207 fields"):
        list(load_wflw_annotations(tmp_path / "short.txt", tmp_path))


def test_biwi_frame(tmp_path):
    _image(tmp_path / "frame_00004_rgb.png")
    (tmp_path / "frame_00004_pose.txt").write_text("1 0 0 \n0 1 0 \n0 0 1 \n\n10.5 -3 900 \n")
    sample = load_biwi_frame(tmp_path / "frame_00004_rgb.png")
    np.testing.assert_allclose(sample.rotation, np.eye(3))
    np.testing.assert_allclose(sample.translation_mm, [10.5, -3, 900])
    assert sample.mask.sum() == 0


def test_pnp_recovers_a_known_pose(synthetic_face):
    face = synthetic_face
    pose = np.array([25.0, -10.0, 8.0, 0.01, -0.02, 0.45])
    rotation, translation = pose6_to_rotation_translation(pose)
    points = project_points(face, rotation, translation, crop_camera_matrix(128))
    np.testing.assert_allclose(pose_from_landmarks(points, face, 128), pose, atol=1e-4)


def test_mean_face_factorisation_recovers_a_known_face(synthetic_face):
    truth = synthetic_face * 1000.0
    rng = np.random.default_rng(0)
    shapes = []
    for _ in range(200):
        yaw, pitch, roll = rng.uniform([-50, -25, -30], [50, 25, 30])
        rotation, _ = pose6_to_rotation_translation(np.array([yaw, pitch, roll, 0, 0, 1]))
        projected = (truth @ rotation.T)[:, :2] * rng.uniform(0.5, 2.0) + rng.uniform(0, 300, 2)
        shapes.append(projected + rng.normal(0, 0.3, projected.shape))
    face = estimate_mean_face(np.array(shapes))
    eye_width = np.linalg.norm(face[36] - face[45])
    assert eye_width == pytest.approx(BIOCULAR_BREADTH_MM)
    np.testing.assert_allclose(
        face, truth * BIOCULAR_BREADTH_MM / np.linalg.norm(truth[36] - truth[45]), atol=1.5
    )


def test_mean_face_from_real_shapes_is_a_plausible_head(data_300w):
    shapes = np.stack([s.landmarks for s in iter_300w(data_300w / "afw")])
    face = estimate_mean_face(shapes)
    assert face[30, 0] > 20.0  # nose tip in front of the eyes
    assert face[8, 2] < -80.0  # chin well below the eyes
    np.testing.assert_allclose(face[list(IBUG68.flip_permutation)] * [1, -1, 1], face, atol=1e-9)


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_train_val(100, 0.1, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100
    np.testing.assert_array_equal(val, split_train_val(100, 0.1, seed=3)[1])


def test_patch_set_is_cached_and_keeps_landmarks_on_the_face(tiny_300w, tmp_path):
    patches = build_patch_set([tiny_300w / "afw"], 32, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = build_patch_set([tiny_300w / "afw"], 32, tmp_path / "cache")
    np.testing.assert_array_equal(patches.patches, again.patches)
    sample = next(iter_300w(tiny_300w / "afw"))
    box = square_box_from_landmarks(sample.landmarks)
    expected = apply_affine(sample.landmarks, crop_affine(box, 48))
    patch_box = patches.box
    np.testing.assert_allclose(
        apply_affine(patches.landmarks[0], crop_affine(patch_box, 48)), expected, atol=1e-6
    )
