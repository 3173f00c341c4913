"""Landmark positions from the MNN's heatmaps, at sub-pixel precision.

Each heatmap is a softmax over the whole crop (model I/O contract). The arg-max alone quantises
landmarks to the heatmap grid (4 crop pixels when a 256 px crop has 64 px heatmaps), so the
peak is refined by fitting a parabola to the *log* of the peak and its two neighbours along x
and along y. For a Gaussian-shaped peak that fit is exact (the log of a Gaussian is a
parabola), unlike a soft-argmax over a window, which is pulled towards the window's centre.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_heatmaps", "heatmap_to_crop"]

#: Floor for heatmap values before the log, so empty neighbours (exactly 0) stay finite.
_LOG_FLOOR = 1e-12


def heatmap_to_crop(coords_hm: np.ndarray, heatmap_size: int, crop_size: float) -> np.ndarray:
    """Heatmap pixel-index coordinates -> crop pixels (pixel i's centre is (i + 0.5) * S / H)."""
    return (np.asarray(coords_hm, dtype=np.float64) + 0.5) * (crop_size / heatmap_size)


def decode_heatmaps(heatmaps: np.ndarray, crop_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel peak of every map: ``(N, L, H, W)`` -> landmarks ``(N, L, 2)`` in crop pixels.

    Also returns each map's peak value ``(N, L)``, a cheap sharpness cue. The refinement
    offset is clamped to half a heatmap pixel, i.e. it never leaves the arg-max pixel: a
    flat or two-peaked map keeps the arg-max rather than drifting between modes.
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
        raise ValueError(f"heatmaps must be (N, L, H, H), got {maps.shape}")
    num, points, size, _ = maps.shape
    flat = maps.reshape(num * points, size * size)
    rows = np.arange(num * points)
    peak_index = np.argmax(flat, axis=1)
    peak_value = flat[rows, peak_index]
    py, px = np.divmod(peak_index, size)

    def log_at(dy: int, dx: int) -> np.ndarray:
        yy, xx = py + dy, px + dx
        inside = (yy >= 0) & (yy < size) & (xx >= 0) & (xx < size)
        values = flat[rows, np.clip(yy, 0, size - 1) * size + np.clip(xx, 0, size - 1)]
        return np.log(np.maximum(np.where(inside, values, 0.0), _LOG_FLOOR))

    centre = np.log(np.maximum(peak_value, _LOG_FLOOR))
    offsets = []
    for before, after in ((log_at(0, -1), log_at(0, 1)), (log_at(-1, 0), log_at(1, 0))):
        curvature = before - 2.0 * centre + after
        safe = np.where(curvature < 0, curvature, -1.0)
        offset = np.where(curvature < 0, 0.5 * (before - after) / safe, 0.0)
        offsets.append(np.clip(offset, -0.5, 0.5))
    coords = np.stack([px + offsets[0], py + offsets[1]], axis=-1).reshape(num, points, 2)
    return heatmap_to_crop(coords, size, crop_size), peak_value.reshape(num, points).astype(
        np.float64
    )
