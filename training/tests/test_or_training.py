"""Fitting the occlusion-aware regressor: synthetic heatmaps of known shapes, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from headpose_ros.core.manifest import load_manifest
from headpose_ros.core.occlusion_regressor import (
    OcclusionRegressor,
    initial_occlusion,
    initial_shape,
    refine_reference,
)
from headpose_training.checkpoint import load_checkpoint
from headpose_training.occlusion_regressor_training import main
from headpose_training.or_fit import (
    OrFitConfig,
    OrTrainingSet,
    basis_coefficients,
    fit_occlusion_regressor,
    jittered_poses,
    nme_interocular,
    normalised_mean_shape,
    select_stages,
)

CROP = 128


def template_face_m() -> np.ndarray:
    """A crude iBUG-68-ordered 3D face (head frame: x forward, y left, z up), in metres."""
    t = np.linspace(-0.95 * np.pi, -0.05 * np.pi, 17)
    jaw = np.column_stack([-np.abs(np.cos(t)) * 0.04, -np.cos(t) * 0.07, np.sin(t) * 0.08 + 0.01])
    brow_y = np.linspace(-0.06, -0.015, 5)
    brows = np.concatenate([brow_y, -brow_y[::-1]])
    brows = np.column_stack([np.full(10, 0.01), brows, np.full(10, 0.035)])
    bridge = np.column_stack(
        [np.linspace(0.015, 0.035, 4), np.zeros(4), np.linspace(0.015, -0.02, 4)]
    )
    nostrils = np.column_stack(
        [np.full(5, 0.02), np.linspace(-0.015, 0.015, 5), np.full(5, -0.03)]
    )
    a = np.linspace(0.0, 2.0 * np.pi, 7)[:-1]
    eyes = [
        np.column_stack([np.zeros(6), side * 0.035 - np.cos(a) * 0.015, np.sin(a) * 0.006 + 0.015])
        for side in (-1.0, 1.0)
    ]
    outer, inner = np.linspace(0, 2 * np.pi, 13)[:-1], np.linspace(0, 2 * np.pi, 9)[:-1]
    mouth = [
        np.column_stack([np.full(len(u), 0.01), -np.cos(u) * w, np.sin(u) * h - 0.055])
        for u, w, h in ((outer, 0.025, 0.012), (inner, 0.018, 0.004))
    ]
    return np.vstack([jaw, brows, bridge, nostrils, *eyes, *mouth])


def synthetic_set(rng: np.random.Generator, count: int, size: int = 32) -> OrTrainingSet:
    """Faces = the template deformed per face; heatmaps = noisy Gaussians at the true points.

    ``p^AE`` is the true pose plus 3 degrees of noise, like an imperfect MNN.
    """
    face = template_face_m()
    pose = rng.uniform(
        [-30, -15, -15, -0.01, -0.01, 0.3], [30, 15, 15, 0.01, 0.01, 0.4], (count, 6)
    )
    targets = np.stack(
        [initial_shape(p[None], face + rng.normal(0, 0.003, face.shape), CROP)[0] for p in pose]
    )
    centres = (np.arange(size) + 0.5) * CROP / size
    dx = centres[None, None, None, :] - targets[..., 0, None, None]
    dy = centres[None, None, :, None] - targets[..., 1, None, None]
    maps = np.exp(-(dx**2 + dy**2) / (2 * 3.0**2)) + rng.random((count, 68, size, size)) * 0.05
    maps = (maps / maps.sum(axis=(2, 3), keepdims=True)).astype(np.float32)
    noisy_pose = pose.copy()
    noisy_pose[:, :3] += rng.normal(0.0, 3.0, (count, 3))
    return OrTrainingSet(maps, noisy_pose, np.ones((count, 68)), targets, CROP)


def test_fitting_reduces_error_on_unseen_faces() -> None:
    rng = np.random.default_rng(0)
    train, test = synthetic_set(rng, 160), synthetic_set(rng, 60)
    config = OrFitConfig(
        num_stages=4, trees_per_landmark=2, initialisations=3, leaf_regularisation=5.0
    )
    regressor, curve = fit_occlusion_regressor(train, template_face_m(), config, progress=False)
    assert curve[-1] < 0.7 * curve[0]
    start = initial_shape(test.pose_ae, template_face_m(), CROP)
    refined = regressor.refine(test.heatmaps, test.pose_ae, test.visibility, CROP)
    before, after = (
        nme_interocular(start, test.targets).mean(),
        nme_interocular(refined, test.targets).mean(),
    )
    assert after < 0.85 * before, (before, after)
    kept, val_curve = select_stages(regressor, test)
    assert len(val_curve) == 5 and kept.num_stages == 1 + int(np.argmin(val_curve[1:]))
    kept_nme = nme_interocular(
        kept.refine(test.heatmaps, test.pose_ae, test.visibility, CROP), test.targets
    )
    assert kept_nme.mean() == pytest.approx(min(val_curve[1:]))
    # The shipped kernel and the numpy reference the trees were fitted with agree.
    occluded = initial_occlusion(test.pose_ae, test.visibility) > regressor.occlusion_threshold
    reference = refine_reference(regressor, test.heatmaps, start, occluded, CROP)
    np.testing.assert_allclose(refined, reference, atol=1e-9)


def test_fitting_is_seeded() -> None:
    train = synthetic_set(np.random.default_rng(1), 40)
    config = OrFitConfig(num_stages=1, trees_per_landmark=1, initialisations=2)
    first, _ = fit_occlusion_regressor(train, template_face_m(), config, progress=False)
    second, _ = fit_occlusion_regressor(train, template_face_m(), config, progress=False)
    np.testing.assert_array_equal(first.leaf_coefficients, second.leaf_coefficients)
    np.testing.assert_array_equal(first.split_threshold, second.split_threshold)


def test_training_curve_is_what_inference_computes_on_the_training_starts() -> None:
    """The shapes fitting moves stage by stage are the shapes the shipped kernel produces."""
    train = synthetic_set(np.random.default_rng(3), 30)
    config = OrFitConfig(num_stages=2, trees_per_landmark=2, initialisations=2)
    regressor, curve = fit_occlusion_regressor(train, template_face_m(), config, progress=False)
    poses = jittered_poses(train.pose_ae, config, np.random.default_rng(config.seed))
    visibility = np.tile(train.visibility, (2, 1))
    heatmaps = np.tile(train.heatmaps, (2, 1, 1, 1))
    refined = regressor.refine(heatmaps, poses, visibility, CROP)
    targets = np.tile(train.targets, (2, 1, 1))
    assert nme_interocular(refined, targets).mean() == pytest.approx(curve[-1], rel=1e-9)


def test_pose_jitter_stays_within_the_notes_ranges() -> None:
    pose = np.tile([5.0, -3.0, 2.0, 0.0, 0.0, 0.4], (50, 1))
    config = OrFitConfig(initialisations=4)
    jittered = jittered_poses(pose, config, np.random.default_rng(2))
    assert jittered.shape == (200, 6)
    np.testing.assert_array_equal(jittered[:50], pose)  # copy 0 is the MNN's own pose
    delta = np.abs(jittered[50:] - np.tile(pose, (3, 1)))
    assert np.all(delta[:, 0] <= 20) and np.all(delta[:, 1:3] <= 10) and np.all(delta[:, 3:] == 0)
    assert delta[:, 0].max() > 15  # really spread over the range


def test_normalised_mean_shape_ignores_position_scale_and_rotation() -> None:
    shapes = initial_shape(
        np.array([[0, 0, 0, 0, 0, 0.4], [10, 5, 0, 0, 0, 0.4]]), template_face_m(), CROP
    )
    mean = normalised_mean_shape(shapes)
    angle = 0.4
    rotation = 3.0 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = normalised_mean_shape(shapes @ rotation.T + 17.0)
    assert np.abs(mean.mean(axis=0)).max() < 1e-12
    assert np.ptp(mean, axis=0).max() == pytest.approx(1.0)
    aligned = moved @ np.linalg.lstsq(moved, mean, rcond=None)[0]
    np.testing.assert_allclose(aligned, mean, atol=1e-6)


def test_partially_annotated_crops_teach_the_points_they_have() -> None:
    """AFLW-like crops (10 of 68 points known) join complete ones without breaking the fit."""
    rng = np.random.default_rng(4)
    complete, partial, test = (synthetic_set(rng, n) for n in (80, 80, 60))
    known = np.zeros(68, bool)
    known[[19, 24, 36, 39, 42, 45, 30, 48, 54, 8]] = True
    partial = OrTrainingSet(
        partial.heatmaps,
        partial.pose_ae,
        partial.visibility,
        np.where(known[None, :, None], partial.targets, np.nan),
        CROP,
    )
    assert partial.complete.sum() == 0 and complete.complete.all()
    config = OrFitConfig(num_stages=3, initialisations=2, leaf_regularisation=5.0)
    regressor, curve = fit_occlusion_regressor(
        complete.concatenate(partial), template_face_m(), config, progress=False
    )
    assert np.all(np.isfinite(curve)) and curve[-1] < curve[0]
    start = initial_shape(test.pose_ae, template_face_m(), CROP)
    refined = regressor.refine(test.heatmaps, test.pose_ae, test.visibility, CROP)
    assert (
        nme_interocular(refined, test.targets).mean() < nme_interocular(start, test.targets).mean()
    )


def test_basis_coefficients_use_only_the_known_coordinates() -> None:
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.normal(size=(136, 8)))[0].T  # 8 orthonormal rows
    truth = rng.normal(size=(3, 8))
    residual = truth @ basis
    known = np.ones_like(residual, dtype=bool)
    known[1, 40:] = False  # a partial residual: its unknown part is garbage
    residual[1, 40:] = np.nan
    coefficients = basis_coefficients(residual, known, basis, ridge=1e-9)
    np.testing.assert_allclose(coefficients, truth, atol=1e-6)


def test_starts_behind_the_crop_camera_are_left_out() -> None:
    train = synthetic_set(np.random.default_rng(6), 30)
    pose = train.pose_ae.copy()
    pose[:5, 5] = -0.4  # p^AE puts these faces behind the camera
    broken = OrTrainingSet(train.heatmaps, pose, train.visibility, train.targets, CROP)
    config = OrFitConfig(num_stages=1, trees_per_landmark=1, initialisations=2)
    _, curve = fit_occlusion_regressor(broken, template_face_m(), config, progress=False)
    assert np.all(np.isfinite(curve))


def report_stages(report_dir: Path) -> int:
    return json.loads((report_dir / "or_report.json").read_text())["stages_kept"]


def test_command_fits_on_real_crops_and_registers_the_artefact(
    tiny_data: Path, tiny_run: Path, tiny_export: Path, tmp_path: Path
) -> None:
    report_dir = tmp_path / "report"
    model_dir = tiny_export.parent
    args = ["--model-dir", str(model_dir), "--checkpoint", str(tiny_run), "--data", str(tiny_data)]
    args += [
        "--report-dir",
        str(report_dir),
        "--set",
        "num_stages=2",
        "--set",
        "initialisations=2",
    ]
    args += ["--set", "crop_variants=2", "--set", "aflw_faces=6"]
    assert main([*args, "--evaluate-test", "--register"]) == 0

    manifest, files = load_manifest(model_dir / "manifest.json")  # hashes verified
    assert files["or"] == (model_dir / "or.npz").resolve()
    regressor = OcclusionRegressor.load(files["or"], manifest.mean_face_m)
    assert regressor.num_stages == report_stages(report_dir) and regressor.num_stages in (1, 2)
    report = json.loads((report_dir / "or_report.json").read_text())
    assert len(report["val_curve_nme_io_pct"]) == 3
    _, checkpoint = load_checkpoint(tiny_run)
    train_faces = len(checkpoint.split["300w"]["train"])
    assert report["fit_crops"] == {"300w": 2 * train_faces, "all": 2 * train_faces + 6}
    assert report["helen_test"]["faces"] == 3
    assert np.isfinite(report["helen_test"]["nme_io_mnn_or_pct"])
    assert manifest.training["occlusion_regressor"]["helen_test"] == report["helen_test"]
    assert (report_dir / "or_report.png").stat().st_size > 0


def test_command_rejects_an_unknown_setting(tiny_data, tiny_run, tiny_export, tmp_path):
    args = ["--model-dir", str(tiny_export.parent), "--checkpoint", str(tiny_run)]
    with pytest.raises(SystemExit):
        main([*args, "--data", str(tiny_data), "--set", "num_stagez=2"])
