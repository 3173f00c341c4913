"""Accuracy metrics for landmarks, head pose and visibility, in plain numpy.

Shared by the training package's ``headpose-evaluate`` and the core's recorded-data tools so that
every number the project reports is computed one way. Definitions follow the paper (section
4.1): NME is the mean over annotated landmarks of the point error divided by a per-face
normaliser; MAE is the mean absolute angle error; visibility is scored as occlusion detection,
recall at the threshold where precision first reaches 80%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headpose_ros.core.landmarks import IBUG68, LandmarkScheme

__all__ = [
    "NORMALISERS",
    "YAW_BINS",
    "PoseErrors",
    "auc_and_failure_rate",
    "cumulative_error_curve",
    "landmark_normaliser",
    "nme_per_face",
    "pose_errors",
    "recall_at_precision",
]

#: Names accepted by :func:`landmark_normaliser`.
NORMALISERS = ("interocular", "interpupil", "box_height")

#: |yaw| intervals of the paper's tables, in degrees; the last one is closed at 90.
YAW_BINS: tuple[tuple[float, float], ...] = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def landmark_normaliser(gt: np.ndarray, kind: str, scheme: LandmarkScheme = IBUG68) -> np.ndarray:
    """Per-face distance that NME divides by, from the ground-truth shapes (N, L, 2).

    "interocular": outer eye corners (300-W's usual NME); "interpupil": eye centres;
    "box_height": height of the ground-truth landmarks' bounding box (the paper's "height").
    """
    gt = np.asarray(gt, dtype=np.float64)
    if kind == "interocular":
        return scheme.interocular_distance(gt)
    if kind == "interpupil":
        return scheme.interpupil_distance(gt)
    if kind == "box_height":
        return np.nanmax(gt[..., 1], axis=-1) - np.nanmin(gt[..., 1], axis=-1)
    raise ValueError(f"unknown normaliser {kind!r}; choose one of {NORMALISERS}")


def nme_per_face(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None, normaliser: np.ndarray
) -> np.ndarray:
    """Eq. (7) per face, as a fraction (multiply by 100 for %): masked mean error / normaliser.

    A face whose mask is all zero has no defined error and gets NaN, which callers must
    report rather than average away.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise ValueError(f"pred and gt must both be (N, L, 2), got {pred.shape} and {gt.shape}")
    weights = np.ones(gt.shape[:2]) if mask is None else np.asarray(mask, dtype=np.float64)
    errors = np.linalg.norm(pred - gt, axis=2)
    errors = np.where(weights > 0, errors, 0.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * errors).sum(axis=1) / total, np.nan) / np.asarray(
            normaliser
        )


def cumulative_error_curve(
    errors: np.ndarray, max_error: float, steps: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of faces with error <= x for x in [0, max_error] (the CED plotted in reports)."""
    errors = np.asarray(errors, dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    thresholds = np.linspace(0.0, max_error, steps)
    if errors.size == 0:
        return thresholds, np.zeros_like(thresholds)
    fractions = np.searchsorted(np.sort(errors), thresholds, side="right") / errors.size
    return thresholds, fractions


def auc_and_failure_rate(
    errors: np.ndarray, threshold: float = 0.08, steps: int = 1000
) -> tuple[float, float]:
    """Area under the CED up to ``threshold`` (normalised to [0, 1]) and the share above it."""
    errors = np.asarray(errors, dtype=np.float64)
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        raise ValueError("no finite errors to summarise")
    x, y = cumulative_error_curve(errors, threshold, steps)
    auc = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / threshold)
    return auc, float(np.mean(errors > threshold))


@dataclass(frozen=True)
class PoseErrors:
    """Absolute yaw/pitch/roll errors (degrees) with summaries overall and by |yaw| bin."""

    abs_errors: np.ndarray  # (N, 3)
    gt_yaw: np.ndarray  # (N,)

    @property
    def mae(self) -> dict[str, float]:
        """MAE per angle and their mean (eq. 6)."""
        per_angle = self.abs_errors.mean(axis=0)
        return {
            "yaw": float(per_angle[0]),
            "pitch": float(per_angle[1]),
            "roll": float(per_angle[2]),
            "mean": float(per_angle.mean()),
        }

    def by_yaw_bin(
        self, bins: Sequence[tuple[float, float]] = YAW_BINS
    ) -> dict[str, dict[str, float]]:
        """MAE per |yaw| interval ("[lo,hi)", the last closed), with the face count of each."""
        result = {}
        abs_yaw = np.abs(self.gt_yaw)
        for index, (low, high) in enumerate(bins):
            last = index == len(bins) - 1
            selected = (abs_yaw >= low) & ((abs_yaw <= high) if last else (abs_yaw < high))
            label = f"[{low:g},{high:g}{']' if last else ')'}"
            if selected.any():
                summary = PoseErrors(self.abs_errors[selected], self.gt_yaw[selected]).mae
            else:
                summary = {
                    "yaw": float("nan"),
                    "pitch": float("nan"),
                    "roll": float("nan"),
                    "mean": float("nan"),
                }
            result[label] = {**summary, "count": int(selected.sum())}
        return result


def pose_errors(pred_deg: np.ndarray, gt_deg: np.ndarray) -> PoseErrors:
    """Absolute (yaw, pitch, roll) errors in degrees, with differences wrapped to [-180, 180)."""
    pred_deg, gt_deg = np.asarray(pred_deg, dtype=np.float64), np.asarray(gt_deg, dtype=np.float64)
    if pred_deg.shape != gt_deg.shape or pred_deg.ndim != 2 or pred_deg.shape[1] < 3:
        raise ValueError(
            f"expected matching (N, >=3) angle arrays, got {pred_deg.shape} and {gt_deg.shape}"
        )
    difference = np.mod(pred_deg[:, :3] - gt_deg[:, :3] + 180.0, 360.0) - 180.0
    return PoseErrors(np.abs(difference), gt_deg[:, 0])


def recall_at_precision(
    scores: np.ndarray, positives: np.ndarray, precision: float = 0.8
) -> tuple[float, float]:
    """Best recall among thresholds whose precision is at least ``precision``.

    ``scores`` rank how likely each item is positive (for visibility: ``1 - p(visible)``, the
    positive class being "occluded", as in the paper's COFW protocol). Returns (recall,
    threshold); (0.0, inf) when no threshold reaches the precision or there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    if scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and labels {positives.shape} differ in size")
    total_positive = int(positives.sum())
    if total_positive == 0:
        return 0.0, float("inf")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], positives[order]
    true_pos = np.cumsum(hits)
    predicted = np.arange(1, len(hits) + 1)
    # Only the last item of a run of tied scores is a real threshold.
    distinct = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    prec = true_pos / predicted
    recall = true_pos / total_positive
    ok = distinct & (prec >= precision)
    if not ok.any():
        return 0.0, float("inf")
    best = np.flatnonzero(ok)[np.argmax(recall[ok])]
    return float(recall[best]), float(sorted_scores[best])
