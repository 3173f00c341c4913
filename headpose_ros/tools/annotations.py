"""Reading 68-point ``.pts`` annotations (300-W format) that sit next to images.

The offline tools use them to score a run on an annotated folder, and the benchmarks to match
detections to the annotated face; one reader keeps the 1-based convention in one place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["annotation_for", "read_pts"]


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
