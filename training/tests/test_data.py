import cv2
import numpy as np
import pytest
import scipy.io

from headpose_training.data import (
    WFLW98_TO_IBUG68,
    iter_300w,
    load_300w_pts,
    load_aflw2000_mat,
    load_biwi_frame,
    load_cofw_mat,
    load_wflw_annotations,
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
