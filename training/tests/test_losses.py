import math

import numpy as np
import pytest
import torch

from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.geometry import (
    crop_camera_matrix,
    euler_to_matrix,
    pose6_to_rotation_translation,
    project_points,
)
from headpose_training.losses import (
    LossWeights,
    euler_to_matrix_torch,
    gaussian_heatmaps,
    heatmap_entropy_floor,
    heatmap_loss,
    multitask_loss,
    pose_ae_loss,
    pose_ed_loss,
    project_mean_face,
    visibility_loss,
)
from headpose_training.model import MNNOutput


@pytest.mark.parametrize(("crop", "heat"), [(128, 32), (128, 64), (64, 64)])
def test_gaussian_targets_decode_back_to_the_landmark_with_the_core_decoder(crop, heat):
    points = (
        torch.tensor([[[30.3, 70.8], [60.0, 10.25], [5.5, 40.0]]], dtype=torch.float64)
        * crop
        / 128
    )
    maps = gaussian_heatmaps(points, crop, heat, sigma=1.0)
    np.testing.assert_allclose(maps.sum(dim=(2, 3)).numpy(), 1.0, atol=1e-9)
    decoded, _ = decode_heatmaps(maps.numpy(), crop)
    np.testing.assert_allclose(decoded[0], points[0].numpy(), atol=0.02 * crop / heat)


def test_heatmap_loss_of_the_target_itself_is_its_entropy_and_ignores_masked_landmarks():
    points = torch.tensor([[[64.0, 64.0], [20.0, 30.0]]])
    target = gaussian_heatmaps(points, 128, 32, 1.0)
    logits = target.clamp_min(1e-30).log()
    mask = torch.tensor([[1.0, 0.0]])
    expected = heatmap_entropy_floor(128, 32, 1.0)
    assert float(heatmap_loss(logits, target, mask)) == pytest.approx(expected, rel=1e-4)
    logits[0, 1] = torch.randn(32, 32)
    assert float(heatmap_loss(logits, target, mask)) == pytest.approx(expected, rel=1e-4)
    uniform = torch.zeros_like(logits)
    assert float(heatmap_loss(uniform, target, torch.ones(1, 2))) == pytest.approx(
        math.log(32 * 32), rel=1e-5
    )


def test_visibility_loss_known_values():
    logits = torch.zeros(2, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert float(visibility_loss(logits, labels, torch.ones(2, 3))) == pytest.approx(math.log(2))
    confident = torch.tensor([[20.0, -20.0, 20.0], [20.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert float(visibility_loss(confident, labels, mask)) == pytest.approx(0.0, abs=1e-6)


def test_pose_ed_loss_is_the_standardised_euclidean_distance_over_labelled_images():
    std = torch.tensor([10.0, 10.0, 10.0, 0.01, 0.01, 0.02])
    pred = torch.tensor([[30.0, 40.0, 0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.5]])
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.5]])
    both = torch.ones(2)
    assert float(pose_ed_loss(pred, target, std, both)) == pytest.approx(2.5)
    # An image without a pose label (NaN target) adds nothing and does not dilute the mean.
    target[1] = float("nan")
    first_only = torch.tensor([1.0, 0.0])
    assert float(pose_ed_loss(pred, target, std, first_only)) == pytest.approx(5.0)


def test_visibility_is_learnt_where_its_label_is_known_not_where_the_position_is():
    """AFLW: a hidden point has no position (landmark mask 0) but a known label (0)."""
    logits = torch.tensor([[20.0, 20.0]])
    labels = torch.tensor([[1.0, 0.0]])
    position_known = torch.tensor([[1.0, 0.0]])
    label_known = torch.tensor([[1.0, 1.0]])
    assert float(visibility_loss(logits, labels, position_known)) == pytest.approx(0.0, abs=1e-6)
    assert float(visibility_loss(logits, labels, label_known)) == pytest.approx(10.0, rel=1e-3)


def test_torch_euler_and_projection_match_the_core_geometry(synthetic_face):
    angles = torch.tensor([[25.0, -10.0, 7.0], [-60.0, 20.0, -30.0]], dtype=torch.float64)
    for row in angles:
        expected = euler_to_matrix(*np.deg2rad(row.numpy()))
        np.testing.assert_allclose(
            euler_to_matrix_torch(row[None])[0].numpy(), expected, atol=1e-12
        )
    pose = torch.tensor([[25.0, -10.0, 7.0, 0.01, -0.02, 0.5]], dtype=torch.float64)
    rotation, translation = pose6_to_rotation_translation(pose[0].numpy())
    expected = project_points(synthetic_face, rotation, translation, crop_camera_matrix(128))
    face = torch.as_tensor(synthetic_face)
    np.testing.assert_allclose(project_mean_face(pose, face, 128)[0].numpy(), expected, atol=1e-9)
    assert float(
        pose_ae_loss(pose, torch.as_tensor(expected)[None], torch.ones(1, 68), face, 128)
    ) == pytest.approx(0.0, abs=1e-9)
    shifted = torch.as_tensor(expected)[None] + torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert float(pose_ae_loss(pose, shifted, torch.ones(1, 68), face, 128)) == pytest.approx(
        5.0 / 128
    )


def test_multitask_loss_weights_and_skips_tasks(synthetic_face):
    torch.manual_seed(0)
    batch = {
        "image": torch.zeros(2, 3, 64, 64),
        "landmarks": torch.rand(2, 68, 2) * 64,
        "mask": torch.ones(2, 68),
        "visibility": torch.ones(2, 68),
        "visibility_mask": torch.ones(2, 68),
        "pose": torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.5]] * 2),
        "pose_mask": torch.ones(2),
    }
    output = MNNOutput(
        torch.randn(2, 68, 16, 16), batch["pose"] + 1.0, batch["pose"].clone(), torch.randn(2, 68)
    )
    face, std = torch.as_tensor(synthetic_face, dtype=torch.float32), torch.ones(6)
    heat_only = LossWeights(pose_ed=0.0, pose_ae=0.0, heatmaps=1.0, visibility=0.0)
    total, terms = multitask_loss(output, batch, heat_only, face, std, 1.0)
    assert set(terms) == {"heatmaps"} and float(total) == pytest.approx(terms["heatmaps"])
    weights = LossWeights(pose_ed=2.0, pose_ae=3.0, heatmaps=0.5, visibility=4.0)
    total, terms = multitask_loss(output, batch, weights, face, std, 1.0)
    assert terms["pose_ed"] == pytest.approx(math.sqrt(6.0))
    expected = (
        2.0 * terms["pose_ed"]
        + 3.0 * terms["pose_ae"]
        + 0.5 * terms["heatmaps"]
        + 4.0 * terms["visibility"]
    )
    assert float(total) == pytest.approx(expected, rel=1e-6)
