"""The iBUG 68-point landmark scheme, described once for training, inference and evaluation.

Index conventions are 0-based. "Right" and "left" are the *subject's* sides: in a frontal
image the subject's right eye (points 36-41) appears on the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IBUG68", "LandmarkScheme"]


@dataclass(frozen=True)
class LandmarkScheme:
    """A named landmark layout with the index sets that geometry and metrics need.

    Keeping these tables in one object means a flip in augmentation, the NME normaliser in
    evaluation and the self-occlusion rule in the OR can never disagree about which point is
    which.
    """

    name: str
    num_points: int
    flip_permutation: tuple[int, ...]
    right_eye: tuple[int, ...]
    left_eye: tuple[int, ...]
    right_outer_eye_corner: int
    left_outer_eye_corner: int
    right_ear_contour: tuple[int, ...]
    left_ear_contour: tuple[int, ...]
    right_eye_and_brow: tuple[int, ...]
    left_eye_and_brow: tuple[int, ...]

    def __post_init__(self) -> None:
        """Reject tables that are not a valid involution over the points."""
        perm = np.asarray(self.flip_permutation)
        if sorted(self.flip_permutation) != list(range(self.num_points)):
            raise ValueError(f"{self.name}: flip permutation is not a permutation")
        if not np.array_equal(perm[perm], np.arange(self.num_points)):
            raise ValueError(f"{self.name}: flip permutation must be its own inverse")

    def interocular_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance between the outer eye corners, shape (..., 68, 2) -> (...)."""
        delta = (
            points[..., self.right_outer_eye_corner, :]
            - points[..., self.left_outer_eye_corner, :]
        )
        return np.linalg.norm(delta, axis=-1)

    def interpupil_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance between the eye centres (mean of each eye's six points)."""
        right = points[..., list(self.right_eye), :].mean(axis=-2)
        left = points[..., list(self.left_eye), :].mean(axis=-2)
        return np.linalg.norm(right - left, axis=-1)


def _ibug68_flip() -> tuple[int, ...]:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    perm = list(range(68))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


IBUG68 = LandmarkScheme(
    name="ibug68",
    num_points=68,
    flip_permutation=_ibug68_flip(),
    right_eye=tuple(range(36, 42)),
    left_eye=tuple(range(42, 48)),
    right_outer_eye_corner=36,
    left_outer_eye_corner=45,
    # The jaw points nearest the ears: the first to hide behind the cheek when the head turns.
    right_ear_contour=tuple(range(0, 5)),
    left_ear_contour=tuple(range(12, 17)),
    right_eye_and_brow=tuple(range(17, 22)) + tuple(range(36, 42)),
    left_eye_and_brow=tuple(range(22, 27)) + tuple(range(42, 48)),
)
