"""Face data: loaders for the public landmark/pose sets in their published formats.

Every loader yields :class:`FaceSample` with landmarks in 0-based image pixels (pixel centres
on integers, OpenCV's convention), a per-landmark annotation mask (the ``w~`` of the paper's
losses), visibility where the set annotates it, and head pose where the set has it. The 300-W
``.pts`` loader is checked against the real files; AFLW's crops have their own module
(:mod:`headpose_training.aflw`); the others are checked against fixtures written in the
published formats (see the README). Training faces are assembled from these by
:mod:`headpose_training.faces`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from headpose_ros.core.landmarks import IBUG68

__all__ = [
    "WFLW98_TO_IBUG68",
    "FaceSample",
    "iter_300w",
    "load_300w_pts",
    "load_aflw2000_mat",
    "load_biwi_frame",
    "load_cofw_mat",
    "load_wflw_annotations",
]

#: Indices of the 68 iBUG points in WFLW's 98-point layout (every other jaw point, the upper
#: brow contour, all nose points, six of the eight eye points per eye, the whole mouth).
WFLW98_TO_IBUG68 = np.array(
    list(range(0, 33, 2))
    + [33, 34, 35, 36, 37, 42, 43, 44, 45, 46]
    + list(range(51, 60))
    + [60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75]
    + list(range(76, 96))
)


@dataclass
class FaceSample:
    """One annotated face.

    ``landmarks`` is (L, 2) with NaN rows where ``mask`` is 0. ``visibility`` is (L,) with 1 for
    visible, or None when the set has no visibility labels. ``pose_deg`` is (yaw, pitch, roll)
    in the *dataset's own* convention (None when absent); training does not use it, it uses PnP
    labels in :mod:`headpose_ros.core.geometry` conventions instead (paper section 4.2).
    """

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    mask: np.ndarray
    visibility: np.ndarray | None = None
    pose_deg: np.ndarray | None = None
    rotation: np.ndarray | None = None
    translation_mm: np.ndarray | None = None


def _read_image(path: Path) -> np.ndarray:
    """Decode an image as BGR uint8, failing with the file name instead of returning None."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    return image


def load_300w_pts(path: Path | str) -> np.ndarray:
    """Read a 300-W ``.pts`` file into (n_points, 2) 0-based pixel coordinates.

    The files store 1-based (MATLAB) coordinates, hence the ``- 1``.
    """
    path = Path(path)
    text = path.read_text()
    match = re.search(r"n_points:\s*(\d+)\s*\{(.*?)\}", text, re.S)
    if match is None:
        raise ValueError(f"{path} is not a 300-W .pts file (no 'n_points' and '{{ ... }}' block)")
    count = int(match.group(1))
    values = np.array(match.group(2).split(), dtype=np.float64)
    if values.size != 2 * count:
        raise ValueError(
            f"{path}: header says {count} points but the block has {values.size} numbers"
        )
    return values.reshape(count, 2) - 1.0


def iter_300w(folder: Path | str) -> Iterator[FaceSample]:
    """Yield every ``NAME.jpg|png`` + ``NAME.pts`` pair of a 300-W folder, sorted by name.

    300-W annotates every point (visible or estimated), so the mask is all ones and there are
    no visibility labels; a ``.pts`` file without an image is an error, not a silent skip.
    """
    for pts_path in sorted(Path(folder).glob("*.pts")):
        image_path = next(
            (p for ext in (".jpg", ".png", ".jpeg") if (p := pts_path.with_suffix(ext)).is_file()),
            None,
        )
        if image_path is None:
            raise FileNotFoundError(f"no image next to {pts_path}")
        landmarks = load_300w_pts(pts_path)
        yield FaceSample(
            pts_path.stem, _read_image(image_path), landmarks, np.ones(len(landmarks))
        )


def load_aflw2000_mat(mat_path: Path | str) -> FaceSample:
    """Read a 300W-LP / AFLW2000-3D sample: ``NAME.mat`` next to ``NAME.jpg``.

    ``pt2d`` is 2x68 (300W-LP) or 2x21 (AFLW2000-3D, where the 68 points come from
    ``pt3d_68``'s first two rows). ``Pose_Para`` is 1x7: pitch, yaw, roll in radians, then
    tx, ty, tz and scale; ``pose_deg`` is returned as (yaw, pitch, roll) in that dataset's sign
    convention. AFLW2000-3D marks unusable points with negative coordinates: they get mask 0.
    """
    mat_path = Path(mat_path)
    data = scipy.io.loadmat(str(mat_path))
    pt2d = np.asarray(data["pt2d"], dtype=np.float64)
    if pt2d.shape == (2, 68):
        points = pt2d.T.copy()
    elif "pt3d_68" in data:
        points = np.asarray(data["pt3d_68"], dtype=np.float64)[:2].T.copy()
    else:
        raise ValueError(f"{mat_path}: pt2d is {pt2d.shape} and there is no pt3d_68")
    mask = np.all(points >= 0, axis=1).astype(np.float64)
    points[mask == 0] = np.nan
    pitch, yaw, roll = np.rad2deg(np.asarray(data["Pose_Para"], dtype=np.float64).ravel()[:3])
    image = _read_image(mat_path.with_suffix(".jpg"))
    return FaceSample(mat_path.stem, image, points, mask, pose_deg=np.array([yaw, pitch, roll]))


def load_cofw_mat(mat_path: Path | str, split: str = "Tr") -> list[FaceSample]:
    """Read COFW (``COFW_train.mat`` with split "Tr", ``COFW_test.mat`` with "T").

    ``Is<split>`` is a cell array of images (grey or colour) and ``phis<split>`` an Nx87 matrix:
    29 x, 29 y (1-based) and 29 occlusion flags (1 = occluded). The 29 COFW points are not a
    subset of the iBUG scheme, so the samples keep 29 landmarks (for evaluation of visibility).
    MATLAB v7.3 (HDF5) copies of the files must first be re-saved in v7 format.
    """
    try:
        data = scipy.io.loadmat(str(mat_path))
    except NotImplementedError as error:
        raise ValueError(
            f"{mat_path} is a MATLAB v7.3 (HDF5) file; re-save it with -v7"
        ) from error
    images, phis = data[f"Is{split}"].ravel(), np.asarray(data[f"phis{split}"], dtype=np.float64)
    samples = []
    for index, (image, phi) in enumerate(zip(images, phis, strict=True)):
        image = np.asarray(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
        points = np.stack([phi[:29], phi[29:58]], axis=1) - 1.0
        visibility = (phi[58:87] == 0).astype(np.float64)
        samples.append(
            FaceSample(f"cofw_{split}_{index:04d}", image, points, np.ones(29), visibility)
        )
    return samples


def load_wflw_annotations(
    annotation_file: Path | str, image_root: Path | str
) -> Iterator[FaceSample]:
    """Read a WFLW list file: per line 196 coordinates, a 4-number box, 6 flags, image path.

    Samples keep the 98 points; :data:`WFLW98_TO_IBUG68` selects the iBUG 68 subset. WFLW
    coordinates are already 0-based.
    """
    for line_number, line in enumerate(Path(annotation_file).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 207:
            raise ValueError(
                f"{annotation_file}:{line_number}: expected 207 fields, got {len(fields)}"
            )
        points = np.array(fields[:196], dtype=np.float64).reshape(98, 2)
        image_path = Path(image_root) / fields[206]
        name = f"{Path(fields[206]).stem}_{line_number}"
        yield FaceSample(name, _read_image(image_path), points, np.ones(98))


def load_biwi_frame(rgb_path: Path | str) -> FaceSample:
    """Read one Biwi Kinect frame: ``frame_XXXXX_rgb.png`` and its ``frame_XXXXX_pose.txt``.

    The pose file holds a 3x3 rotation matrix (three rows) and the head centre in millimetres
    in the depth camera frame (fourth row). Biwi has no landmarks: the mask is all zeros.
    """
    rgb_path = Path(rgb_path)
    pose_path = rgb_path.with_name(rgb_path.name.replace("_rgb.png", "_pose.txt"))
    rows = np.array(pose_path.read_text().split(), dtype=np.float64)
    if rows.size != 12:
        raise ValueError(
            f"{pose_path}: expected 12 numbers (3x3 rotation + translation), got {rows.size}"
        )
    nan_points = np.full((IBUG68.num_points, 2), np.nan)
    return FaceSample(
        rgb_path.stem,
        _read_image(rgb_path),
        nan_points,
        np.zeros(IBUG68.num_points),
        rotation=rows[:9].reshape(3, 3),
        translation_mm=rows[9:],
    )
