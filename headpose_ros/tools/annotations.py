"""Reading 68-point ``.pts`` annotations (300-W format), and finding the annotated face.

The offline tools use them to score a run on an annotated folder, and the benchmarks to match
detections to the annotated face; one reader keeps the 1-based convention in one place, and
one matcher decides which estimated face an annotation describes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headpose_ros.core.results import FaceResult
from headpose_ros.core.tracking import box_iou

__all__ = [
    "MIN_ANNOTATION_IOU",
    "annotated_face",
    "annotation_for",
    "landmark_box",
    "read_pts",
]

#: Overlap (IoU) of a face's box with the annotation's landmark box above which the face is
#: the annotated one. The tracker continues a face at the same overlap; a face elsewhere in the
#: image overlaps an annotation by about nothing.
MIN_ANNOTATION_IOU = 0.3


def read_pts(path: Path | str) -> np.ndarray:
    """(N, 2) float64 points in 0-based pixel coordinates from a 300-W ``.pts`` file.

    The files store 1-based coordinates (the original release's convention), so 1 is
    subtracted here, once.
    """
    lines = Path(path).read_text().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "{") + 1
        end = next(i for i, line in enumerate(lines) if line.strip() == "}")
        points = np.array([[float(v) for v in line.split()[:2]] for line in lines[start:end]])
    except (StopIteration, ValueError, IndexError) as error:
        raise ValueError(f"{path} is not a valid .pts file: {error}") from error
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{path} holds no points")
    return points - 1.0


def annotation_for(image_path: Path) -> np.ndarray | None:
    """Landmarks of the ``.pts`` file beside ``image_path``, or ``None`` when there is none."""
    pts = image_path.with_suffix(".pts")
    return read_pts(pts) if pts.is_file() else None


def annotated_face(
    faces: list[FaceResult], annotated_box: np.ndarray, min_iou: float = MIN_ANNOTATION_IOU
) -> FaceResult | None:
    """Return the face whose box overlaps ``annotated_box`` most; ``None`` below ``min_iou``.

    ``annotated_box`` is (x0, y0, x1, y1), e.g. the bounding box of annotated landmarks (the
    convention of the estimator's face boxes). Matching by overlap, not by distance, means an
    unannotated face is never scored in place of a missed annotated one.
    """
    if not faces:
        return None
    best = max(faces, key=lambda face: box_iou(np.asarray(face.box), annotated_box))
    return best if box_iou(np.asarray(best.box), annotated_box) >= min_iou else None


def landmark_box(points: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) bounding box of (N, 2) landmarks."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)])
