"""The paper's losses (1)-(4) with the annotation mask, combined as (5).

Every per-landmark term is weighted by ``w / ||w||_1`` of its image (paper eq. 2-4), so a face
with half its landmarks cut off by the crop weighs the same as a complete one, and unknown
landmarks contribute nothing. Sums over images become means over the batch so the loss scale
does not depend on the batch size.

Units. Loss (1) compares *standardised* poses (each component divided by its training-set
standard deviation) because the raw vector mixes degrees and metres. Loss (2) measures the
reprojection error in units of the crop side, so it does not depend on the input size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.nn import functional

from headpose_ros.core.geometry import CROP_FOCAL_FACTOR, FACING_CAMERA
from headpose_training.model import MNNOutput

__all__ = [
    "LossWeights",
    "TASKS",
    "euler_to_matrix_torch",
    "gaussian_heatmaps",
    "heatmap_entropy_floor",
    "heatmap_loss",
    "multitask_loss",
    "pose_ae_loss",
    "pose_ed_loss",
    "project_mean_face",
    "visibility_loss",
]

#: Names of the four terms of loss (5), in the paper's order.
TASKS = ("pose_ed", "pose_ae", "heatmaps", "visibility")


@dataclass(frozen=True)
class LossWeights:
    """The alphas of loss (5); a zero weight switches the task off."""

    pose_ed: float = 1.0
    pose_ae: float = 1.0
    heatmaps: float = 1.0
    visibility: float = 1.0

    def to_dict(self) -> dict[str, float]:
        """Plain-JSON form for configs and checkpoints."""
        return asdict(self)


def _normalised_mask(mask: torch.Tensor) -> torch.Tensor:
    """``w / ||w||_1`` per image; an image with no annotated landmark gets all zeros."""
    return mask / mask.sum(dim=1, keepdim=True).clamp_min(1.0)


def gaussian_heatmaps(
    points: torch.Tensor, crop_size: int, heatmap_size: int, sigma: float
) -> torch.Tensor:
    """Target distributions (N, L, H, H): a Gaussian per landmark, normalised to sum to one.

    Heatmap pixel ``i`` is centred at crop coordinate ``(i + 0.5) * S / H`` (model contract), so
    a landmark at crop ``x`` sits at heatmap index ``x * H / S - 0.5``. ``sigma`` is in heatmap
    pixels. Non-finite points give a uniform map (their mask is zero anyway).
    """
    centres = torch.nan_to_num(points * (heatmap_size / crop_size) - 0.5, nan=-1e4)
    grid = torch.arange(heatmap_size, dtype=points.dtype, device=points.device)
    gx = torch.exp(-((grid - centres[..., 0:1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((grid - centres[..., 1:2]) ** 2) / (2 * sigma**2))
    maps = gy[..., :, None] * gx[..., None, :]
    total = maps.sum(dim=(2, 3), keepdim=True)
    uniform = torch.full_like(maps, 1.0 / heatmap_size**2)
    return torch.where(total > 1e-12, maps / total.clamp_min(1e-12), uniform)


def heatmap_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Loss (3): masked cross-entropy between target and softmax heatmaps."""
    log_prob = functional.log_softmax(logits.flatten(2), dim=2)
    per_landmark = -(targets.flatten(2) * log_prob).sum(dim=2)
    return (_normalised_mask(mask) * per_landmark).sum(dim=1).mean()


def visibility_loss(
    logits: torch.Tensor, visibility: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Loss (4): masked two-class cross-entropy (a sigmoid on one logit is the same thing).

    ``mask`` is where the visibility label is known, which is not where the position is: AFLW
    marks a hidden point as hidden without giving its position.
    """
    per_landmark = functional.binary_cross_entropy_with_logits(
        logits, visibility, reduction="none"
    )
    return (_normalised_mask(mask) * per_landmark).sum(dim=1).mean()


def pose_ed_loss(
    pred: torch.Tensor, target: torch.Tensor, pose_std: torch.Tensor, known: torch.Tensor
) -> torch.Tensor:
    """Loss (1): Euclidean distance between standardised predicted and label poses.

    ``known`` (N,) is 1 where the image has a pose label; the mean runs over those images.
    """
    distance = torch.linalg.vector_norm((pred - torch.nan_to_num(target)) / pose_std, dim=1)
    return (known * distance).sum() / known.sum().clamp_min(1.0)


def euler_to_matrix_torch(angles_deg: torch.Tensor) -> torch.Tensor:
    """Batch version of :func:`headpose_ros.core.geometry.euler_to_matrix` (degrees in)."""
    yaw, pitch, roll = torch.deg2rad(angles_deg).unbind(dim=1)
    zeros, ones = torch.zeros_like(yaw), torch.ones_like(yaw)

    def stack(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)

    cz, sz, cy, sy, cx, sx = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    rot_z = stack([[cz, -sz, zeros], [sz, cz, zeros], [zeros, zeros, ones]])
    rot_y = stack([[cy, zeros, sy], [zeros, ones, zeros], [-sy, zeros, cy]])
    rot_x = stack([[ones, zeros, zeros], [zeros, cx, -sx], [zeros, sx, cx]])
    facing = torch.as_tensor(FACING_CAMERA, dtype=angles_deg.dtype, device=angles_deg.device)
    return facing @ rot_z @ rot_y @ rot_x


def project_mean_face(
    pose: torch.Tensor, mean_face_m: torch.Tensor, crop_size: int
) -> torch.Tensor:
    """Compute ``pi(p, X)``: the mean face posed by ``p`` in the crop camera, (N, L, 2) pixels."""
    rotation = euler_to_matrix_torch(pose[:, :3])
    in_camera = mean_face_m @ rotation.transpose(1, 2) + pose[:, None, 3:6]
    depth = in_camera[..., 2:3].clamp_min(1e-3)  # a face behind the camera must not blow up
    return CROP_FOCAL_FACTOR * crop_size * in_camera[..., :2] / depth + crop_size / 2.0


def pose_ae_loss(
    pose: torch.Tensor,
    points: torch.Tensor,
    mask: torch.Tensor,
    mean_face_m: torch.Tensor,
    crop_size: int,
) -> torch.Tensor:
    """Loss (2): masked landmark reprojection error of the posed mean face, in crop sides."""
    projected = project_mean_face(pose, mean_face_m, crop_size)
    error = torch.linalg.vector_norm(projected - torch.nan_to_num(points), dim=2) / crop_size
    return (_normalised_mask(mask) * error).sum(dim=1).mean()


def multitask_loss(
    output: MNNOutput,
    batch: dict[str, torch.Tensor],
    weights: LossWeights,
    mean_face_m: torch.Tensor,
    pose_std: torch.Tensor,
    sigma: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss (5) and each unweighted term (for logging the per-task magnitudes).

    Terms with zero weight are not computed, so a heatmap-only pre-training step costs no
    projection work.
    """
    crop_size = batch["image"].shape[-1]
    heatmap_size = output.heatmap_logits.shape[-1]
    terms: dict[str, torch.Tensor] = {}
    if weights.pose_ed:
        terms["pose_ed"] = pose_ed_loss(
            output.pose_ed, batch["pose"], pose_std, batch["pose_mask"]
        )
    if weights.pose_ae:
        terms["pose_ae"] = pose_ae_loss(
            output.pose_ae, batch["landmarks"], batch["mask"], mean_face_m, crop_size
        )
    if weights.heatmaps:
        targets = gaussian_heatmaps(batch["landmarks"], crop_size, heatmap_size, sigma)
        terms["heatmaps"] = heatmap_loss(output.heatmap_logits, targets, batch["mask"])
    if weights.visibility:
        terms["visibility"] = visibility_loss(
            output.visibility_logits, batch["visibility"], batch["visibility_mask"]
        )
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}


def heatmap_entropy_floor(crop_size: int, heatmap_size: int, sigma: float) -> float:
    """Cross-entropy of a perfect prediction (the target's own entropy): loss (3)'s minimum.

    Reported next to the heatmap loss so a reader can tell how far it is from converged.
    """
    centre = torch.full((1, 1, 2), crop_size / 2.0)
    target = gaussian_heatmaps(centre, crop_size, heatmap_size, sigma)
    return float(-(target * target.clamp_min(1e-30).log()).sum())
