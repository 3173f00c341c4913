"""The occlusion-aware regressor: numba kernel vs numpy reference, initialisation, occlusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import synthetic_mean_face_mm

from headpose_ros.core.geometry import crop_camera_matrix, euler_to_matrix
from headpose_ros.core.landmarks import IBUG68
from headpose_ros.core.manifest import ModelFileError
from headpose_ros.core.occlusion_regressor import (
    EAR_CONTOUR_YAW_DEG,
    EYE_AND_BROW_YAW_DEG,
    OcclusionRegressor,
    freak_pattern,
    initial_occlusion,
    initial_shape,
    refine_reference,
    shape_indexed_features,
    similarity_from_mean,
    stage_diameters,
)

MEAN_FACE_M = synthetic_mean_face_mm() / 1000.0
CROP = 128.0
POINTS = 68


def random_regressor(
    rng: np.random.Generator,
    stages: int = 4,
    trees: int = 40,
    depth: int = 3,
    components: int = 6,
    tree_landmark: np.ndarray | None = None,
) -> OcclusionRegressor:
    """An artefact with random splits and leaves: enough to exercise every kernel branch."""
    nodes = 2**depth - 1
    pattern = freak_pattern()
    mean_shape = MEAN_FACE_M[:, 1:] * np.array([1.0, -1.0])
    mean_shape = (mean_shape - mean_shape.mean(axis=0)) / np.ptp(mean_shape, axis=0).max()
    if tree_landmark is None:
        tree_landmark = rng.integers(0, POINTS, (stages, trees))
    return OcclusionRegressor(
        mean_shape=mean_shape,
        mean_face_m=MEAN_FACE_M,
        pattern=pattern,
        diameters=stage_diameters(stages),
        tree_landmark=tree_landmark,
        split_a=rng.integers(0, len(pattern), (stages, trees, nodes)),
        split_b=rng.integers(0, len(pattern), (stages, trees, nodes)),
        split_threshold=rng.normal(0.0, 0.2, (stages, trees, nodes)),
        leaf_coefficients=rng.normal(0.0, 0.01, (stages, trees, nodes + 1, components)),
        basis=rng.normal(0.0, 1.0, (stages, components, 2 * POINTS)),
    )


def random_inputs(
    rng: np.random.Generator, faces: int, size: tuple[int, int] = (32, 32)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    heatmaps = rng.random((faces, POINTS, *size)).astype(np.float32)
    heatmaps /= heatmaps.sum(axis=(2, 3), keepdims=True)
    # yaw, pitch, roll (deg), tx, ty, tz (m): wide enough to trigger the self-occlusion rule.
    low, high = [-60, -25, -25, -0.02, -0.02, 0.35], [60, 25, 25, 0.02, 0.02, 0.45]
    pose = rng.uniform(low, high, (faces, 6))
    return heatmaps, pose, rng.random((faces, POINTS))


@pytest.mark.parametrize("seed, size", [(0, (32, 32)), (1, (64, 64)), (2, (24, 40))])
def test_numba_kernel_agrees_with_numpy_reference(seed: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    regressor = random_regressor(rng)
    heatmaps, pose, visibility = random_inputs(rng, 6, size)
    refined = regressor.refine(heatmaps, pose, visibility, CROP)
    start = initial_shape(pose, MEAN_FACE_M, CROP)
    occluded = initial_occlusion(pose, visibility) > regressor.occlusion_threshold
    assert occluded.any() and not occluded.all()
    reference = refine_reference(regressor, heatmaps, start, occluded, CROP)
    np.testing.assert_allclose(refined, reference, rtol=0, atol=1e-9)
    assert np.abs(refined - start).max() > 0.1  # the trees really moved the shape


def test_initial_shape_is_the_crop_camera_projection_of_the_mean_face() -> None:
    pose = np.array([[25.0, -10.0, 5.0, 0.01, -0.02, 0.4]])
    shape = initial_shape(pose, MEAN_FACE_M, CROP)[0]
    rotation = euler_to_matrix(*np.deg2rad(pose[0, :3]))
    camera_points = MEAN_FACE_M @ rotation.T + pose[0, 3:]
    focal = 1.5 * CROP
    expected = focal * camera_points[:, :2] / camera_points[:, 2:] + CROP / 2.0
    np.testing.assert_allclose(shape, expected, atol=1e-9)
    np.testing.assert_allclose(crop_camera_matrix(CROP)[0, 0], focal)


def test_frontal_initial_shape_is_upright_and_centred() -> None:
    shape = initial_shape(np.array([[0, 0, 0, 0, 0, 0.4]]), MEAN_FACE_M, CROP)[0]
    right_eye, left_eye = (
        shape[list(IBUG68.right_eye)].mean(0),
        shape[list(IBUG68.left_eye)].mean(0),
    )
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
    assert shape[8, 1] > right_eye[1]  # chin below the eyes
    assert abs(shape[27:31, 0].mean() - CROP / 2) < 1.0  # nose bridge on the optical axis


def test_zero_leaves_leave_the_initial_shape_unchanged() -> None:
    rng = np.random.default_rng(3)
    regressor = random_regressor(rng)
    still = OcclusionRegressor(
        **{**regressor.__dict__, "leaf_coefficients": np.zeros_like(regressor.leaf_coefficients)}
    )
    heatmaps, pose, visibility = random_inputs(rng, 3)
    np.testing.assert_allclose(
        still.refine(heatmaps, pose, visibility, CROP), initial_shape(pose, MEAN_FACE_M, CROP)
    )


def test_self_occlusion_rule_follows_yaw_direction() -> None:
    yaws = [0.0, 10.0, 20.0, 45.0, -20.0, -45.0]
    pose = np.array([[yaw, 0, 0, 0, 0, 0.4] for yaw in yaws])
    visibility = np.full((len(yaws), POINTS), 0.9)
    occlusion = initial_occlusion(pose, visibility)
    hidden = occlusion == 1.0
    np.testing.assert_allclose(occlusion[~hidden], 0.1)
    assert not hidden[0].any() and not hidden[1].any()
    assert set(np.flatnonzero(hidden[2])) == set(IBUG68.left_ear_contour)
    assert set(np.flatnonzero(hidden[3])) == {*IBUG68.left_ear_contour, *IBUG68.left_eye_and_brow}
    assert set(np.flatnonzero(hidden[4])) == set(IBUG68.right_ear_contour)
    assert set(np.flatnonzero(hidden[5])) == {
        *IBUG68.right_ear_contour,
        *IBUG68.right_eye_and_brow,
    }
    assert EAR_CONTOUR_YAW_DEG == 15.0 and EYE_AND_BROW_YAW_DEG == 40.0


def test_points_declared_self_occluded_turn_away_from_the_camera() -> None:
    """Ties the rule's sign to geometry.py: positive yaw moves the subject's left side away."""
    rotation = euler_to_matrix(np.deg2rad(30.0), 0.0, 0.0)
    depth = MEAN_FACE_M @ rotation.T
    left, right = list(IBUG68.left_ear_contour), list(IBUG68.right_ear_contour)
    assert depth[left, 2].mean() > depth[right, 2].mean() + 0.02


def test_trees_of_occluded_landmarks_add_nothing() -> None:
    rng = np.random.default_rng(4)
    stages, trees = 3, 20
    tree_landmark = np.tile(np.repeat([10, 30], trees // 2), (stages, 1))
    regressor = random_regressor(rng, stages=stages, trees=trees, tree_landmark=tree_landmark)
    heatmaps, pose, _ = random_inputs(rng, 2)
    pose[:, 0] = 0.0  # no self-occlusion: only the MNN visibility decides
    start = initial_shape(pose, MEAN_FACE_M, CROP)

    hidden_both = np.ones((2, POINTS))
    hidden_both[:, [10, 30]] = 0.0
    np.testing.assert_array_equal(regressor.refine(heatmaps, pose, hidden_both, CROP), start)

    hidden_30 = np.ones((2, POINTS))
    hidden_30[:, 30] = 0.0
    only_10 = np.where(tree_landmark[:, :, None, None] == 10, regressor.leaf_coefficients, 0.0)
    only_10_regressor = OcclusionRegressor(**{**regressor.__dict__, "leaf_coefficients": only_10})
    everything_visible = np.ones((2, POINTS))
    expected = only_10_regressor.refine(heatmaps, pose, everything_visible, CROP)
    np.testing.assert_allclose(regressor.refine(heatmaps, pose, hidden_30, CROP), expected)
    assert np.abs(expected - start).max() > 0.1


@pytest.mark.parametrize("size", [16, 64])
def test_features_read_each_landmarks_own_heatmap_at_crop_coordinates(size: int) -> None:
    """A one-pixel peak at heatmap pixel (i, j) lies at crop ((j + .5) S / H, (i + .5) S / H)."""
    heatmaps = np.zeros((1, POINTS, size, size), dtype=np.float32)
    row, col = size // 3, size // 2
    heatmaps[0, 7, row, col] = 1.0
    peak = np.array([(col + 0.5) * CROP / size, (row + 0.5) * CROP / size])
    shapes = np.tile(peak, (1, POINTS, 1))
    transforms = np.eye(2)[None] * 20.0
    features = shape_indexed_features(heatmaps, shapes, transforms, freak_pattern(), 0.005, CROP)
    assert features[0, 7, 0] == pytest.approx(1.0)  # the pattern centre sits on the peak
    assert np.all(features[0, 7, 1:] < 1.0)
    assert np.all(features[0, np.arange(POINTS) != 7] == 0.0)  # other maps are empty


def test_pattern_and_diameters_follow_the_notes() -> None:
    pattern = freak_pattern()
    radii = np.linalg.norm(pattern, axis=1)
    assert pattern.shape == (43, 2)
    assert (
        radii[0] == 0.0
        and radii.max() == pytest.approx(0.667)
        and radii[1:].min() == pytest.approx(0.083)
    )
    diameters = stage_diameters(10)
    assert diameters[0] == pytest.approx(0.255) and diameters[-1] == pytest.approx(0.005)
    assert np.all(np.diff(diameters) < 0)


def test_similarity_recovers_a_scaled_rotation() -> None:
    mean_shape = np.random.default_rng(5).normal(size=(POINTS, 2))
    mean_shape -= mean_shape.mean(axis=0)
    angle, scale = 0.3, 40.0
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shapes = (mean_shape @ rotation.T + [60.0, 70.0])[None]
    np.testing.assert_allclose(similarity_from_mean(mean_shape, shapes)[0], rotation, atol=1e-9)


def test_artefact_round_trip(tmp_path: Path) -> None:
    regressor = random_regressor(np.random.default_rng(6))
    path = tmp_path / "or.npz"
    regressor.save(path)
    loaded = OcclusionRegressor.load(path, MEAN_FACE_M)
    for name, value in regressor.__dict__.items():
        np.testing.assert_array_equal(getattr(loaded, name), value)


def test_missing_artefact_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="absent.npz"):
        OcclusionRegressor.load(tmp_path / "absent.npz")


def test_truncated_artefact_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "or.npz"
    random_regressor(np.random.default_rng(7)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="or.npz.*(unreadable|truncated)"):
        OcclusionRegressor.load(path)


def _save_arrays(path: Path, regressor: OcclusionRegressor, **changes: object) -> None:
    regressor.save(path)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    arrays = {name: value for name, value in arrays.items() if value is not None}
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"basis": None}, "lacks.*basis"),
        ({"format_version": np.int64(99)}, "format 99"),
        ({"split_a": np.full((4, 40, 7), 50)}, "outside the pattern"),
        ({"leaf_coefficients": np.zeros((4, 40, 8, 5))}, "leaf_coefficients has shape"),
        ({"tree_landmark": np.full((4, 40), 68)}, "outside the landmarks"),
        ({"split_threshold": np.full((4, 40, 7), np.nan)}, "non-finite"),
    ],
)
def test_mismatched_artefact_names_the_file_and_the_problem(
    tmp_path: Path, changes: dict, message: str
) -> None:
    path = tmp_path / "broken_or.npz"
    _save_arrays(path, random_regressor(np.random.default_rng(8)), **changes)
    with pytest.raises(ModelFileError, match=f"broken_or.npz.*{message}"):
        OcclusionRegressor.load(path)


def test_artefact_fitted_on_another_mean_face_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "or.npz"
    random_regressor(np.random.default_rng(9)).save(path)
    with pytest.raises(ModelFileError, match="different mean 3D face"):
        OcclusionRegressor.load(path, MEAN_FACE_M * 1.1)
    with pytest.raises(ModelFileError, match="different mean 3D face"):
        OcclusionRegressor.load(path, MEAN_FACE_M[:60])


def test_bad_inputs_raise_and_impossible_poses_give_nan_rows() -> None:
    rng = np.random.default_rng(10)
    regressor = random_regressor(rng)
    heatmaps, pose, visibility = random_inputs(rng, 3)
    with pytest.raises(ValueError, match="heatmaps must be"):
        regressor.refine(heatmaps[:, :60], pose, visibility, CROP)
    with pytest.raises(ValueError, match="pose_ae must be"):
        regressor.refine(heatmaps, pose[:2], visibility, CROP)
    bad = heatmaps.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        regressor.refine(bad, pose, visibility, CROP)
    pose[1, 5] = -0.4  # behind the camera
    pose[2, 0] = np.nan
    refined = regressor.refine(heatmaps, pose, visibility, CROP)
    assert np.all(np.isfinite(refined[0])) and np.all(np.isnan(refined[1:]))
