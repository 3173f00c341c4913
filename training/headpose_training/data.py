"""Face data: loaders for the public landmark/pose sets, the mean 3D face and pose labels.

Every loader yields :class:`FaceSample` with landmarks in 0-based image pixels (pixel centres
on integers, OpenCV's convention), a per-landmark annotation mask (the ``w~`` of the paper's
losses), visibility where the set annotates it, and head pose where the set has it. Only the
300-W ``.pts`` loader has been checked against real files here; the others are checked against
fixtures written in the published formats (see the README).

The training images are decoded once and cached as face-centred patches (made with the same
crop code the robot uses, :mod:`headpose_ros.core.crop`) so an epoch costs only augmentation and
the network.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from headpose_ros.core.crop import (
    SquareBox,
    apply_affine,
    crop_affine,
    crop_image,
    square_box_from_landmarks,
)
from headpose_ros.core.geometry import crop_camera_matrix, rotation_translation_to_pose6
from headpose_ros.core.landmarks import IBUG68

__all__ = [
    "BIOCULAR_BREADTH_MM",
    "WFLW98_TO_IBUG68",
    "FaceSample",
    "PatchSet",
    "build_patch_set",
    "estimate_mean_face",
    "iter_300w",
    "load_300w_pts",
    "load_aflw2000_mat",
    "load_biwi_frame",
    "load_cofw_mat",
    "load_wflw_annotations",
    "pose_from_landmarks",
    "split_train_val",
]

#: Outer-eye-corner (ex-ex, "biocular breadth") distance of the mean adult face, in mm. Farkas,
#: "Anthropometry of the Head and Face" (1994), reports ex-ex of about 91 mm for North American
#: men and 87 mm for women; we use their mean, 89 mm, to give the factorised face its scale.
BIOCULAR_BREADTH_MM = 89.0

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


def estimate_mean_face(shapes: np.ndarray, biocular_mm: float = BIOCULAR_BREADTH_MM) -> np.ndarray:
    """Estimate a 68x3 mean face in the head frame (mm) by rigid factorisation of 2D shapes.

    Tomasi-Kanade: the centred 2F x 68 measurement matrix of F faces seen under scaled
    orthography has rank 3; its SVD gives motion and shape up to an affine ambiguity, fixed by
    asking every camera's two rows to be orthogonal and of equal norm (metric upgrade). The
    result is made left/right symmetric with the landmark flip permutation (so that yaw 0 means
    facing the camera and mirrored faces get exactly negated yaw), placed in the head frame of
    :mod:`headpose_ros.core.geometry` (origin between the eyes, x forward, y to the subject's
    left, z up) and scaled so that the outer eye corners are ``biocular_mm`` apart.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    # Normalise each face's size so large photos do not dominate the factorisation.
    centred /= np.sqrt((centred**2).sum(axis=(1, 2), keepdims=True))
    measurements = centred.transpose(0, 2, 1).reshape(-1, shapes.shape[1])
    u, s, vt = np.linalg.svd(measurements, full_matrices=False)
    motion, shape = u[:, :3] * np.sqrt(s[:3]), np.sqrt(s[:3])[:, None] * vt[:3]
    q_sym = _metric_upgrade(motion.reshape(-1, 2, 3))
    eigval, eigvec = np.linalg.eigh(q_sym)
    q = eigvec * np.sqrt(np.clip(eigval, 1e-12, None))
    points = (np.linalg.inv(q) @ shape).T
    return _to_head_frame(points, biocular_mm)


def _metric_upgrade(cameras: np.ndarray) -> np.ndarray:
    """Symmetric Q Q^T making every 2x3 camera's rows orthogonal, of equal norm (least squares)."""

    def coefficients(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Linear coefficients of a^T L b in the six unknowns of symmetric L."""
        return np.stack(
            [
                a[:, 0] * b[:, 0],
                a[:, 0] * b[:, 1] + a[:, 1] * b[:, 0],
                a[:, 0] * b[:, 2] + a[:, 2] * b[:, 0],
                a[:, 1] * b[:, 1],
                a[:, 1] * b[:, 2] + a[:, 2] * b[:, 1],
                a[:, 2] * b[:, 2],
            ],
            axis=1,
        )

    rows_i, rows_j = cameras[:, 0], cameras[:, 1]
    system = np.concatenate(
        [coefficients(rows_i, rows_j), coefficients(rows_i, rows_i) - coefficients(rows_j, rows_j)]
    )
    # Fix the scale with a mean squared row norm of one.
    scale_row = coefficients(rows_i, rows_i).mean(axis=0, keepdims=True)
    system = np.concatenate([system, scale_row * len(cameras)])
    rhs = np.zeros(len(system))
    rhs[-1] = len(cameras)
    l_vec = np.linalg.lstsq(system, rhs, rcond=None)[0]
    a, b, c, d, e, f = l_vec
    return np.array([[a, b, c], [b, d, e], [c, e, f]])


def _to_head_frame(points: np.ndarray, biocular_mm: float) -> np.ndarray:
    """Rotate, mirror-fix, symmetrise and scale factorised points into the head frame."""
    scheme = IBUG68
    right_eye = points[list(scheme.right_eye)].mean(axis=0)
    left_eye = points[list(scheme.left_eye)].mean(axis=0)
    origin = (right_eye + left_eye) / 2.0
    y_axis = left_eye - right_eye
    y_axis /= np.linalg.norm(y_axis)
    up = origin - points[[48, 54, 57]].mean(axis=0)  # mouth to eyes
    z_axis = up - (up @ y_axis) * y_axis
    z_axis /= np.linalg.norm(z_axis)
    x_axis = np.cross(y_axis, z_axis)
    local = (points - origin) @ np.stack([x_axis, y_axis, z_axis]).T
    # Factorisation cannot tell a face from its depth-mirror: the nose tip must point forward.
    if local[30, 0] < local[list(scheme.right_eye) + list(scheme.left_eye), 0].mean():
        local[:, 0] *= -1.0
    mirrored = local[list(scheme.flip_permutation)] * np.array([1.0, -1.0, 1.0])
    symmetric = (local + mirrored) / 2.0
    symmetric[:, 1] -= symmetric[:, 1].mean()
    width = np.linalg.norm(
        symmetric[scheme.right_outer_eye_corner] - symmetric[scheme.left_outer_eye_corner]
    )
    return symmetric * (biocular_mm / width)


def pose_from_landmarks(
    points: np.ndarray, mean_face_m: np.ndarray, crop_size: float
) -> np.ndarray:
    """Pose label (yaw, pitch, roll deg, tx, ty, tz m) by PnP of landmarks in crop pixels.

    This is the paper's POSIT labelling done with OpenCV's PnP against the mean face and the
    crop camera of paper-notes.md. SQPnP finds the global minimum (no initial guess to go
    wrong on profile faces); a Levenberg-Marquardt refinement then polishes it.
    """
    valid = np.all(np.isfinite(points), axis=1)
    object_points = np.ascontiguousarray(mean_face_m[valid], dtype=np.float64)
    image_points = np.ascontiguousarray(points[valid], dtype=np.float64)
    camera = crop_camera_matrix(crop_size)
    ok, rvec, tvec = cv2.solvePnP(
        object_points, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP
    )
    if not ok:
        raise ValueError("PnP failed for this landmark set")
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, camera, None, rvec, tvec)
    rotation, _ = cv2.Rodrigues(rvec)
    return rotation_translation_to_pose6(rotation, tvec.ravel())


@dataclass
class PatchSet:
    """Decoded faces as square patches centred on the paper's crop box, ready for augmentation.

    ``patches`` is (N, P, P, 3) uint8 BGR; the crop box of face ``i`` is centred on the patch
    with side ``box_side`` pixels, and ``landmarks`` (N, L, 2) are in patch pixels. Keeping
    ``context`` times the box around it leaves room for rotation, scaling and translation.
    """

    names: list[str]
    patches: np.ndarray
    landmarks: np.ndarray
    mask: np.ndarray
    box_side: float

    @property
    def box(self) -> SquareBox:
        """The crop box, identical for every patch."""
        centre = self.patches.shape[1] / 2.0
        return SquareBox(centre, centre, self.box_side)

    def subset(self, indices: Sequence[int]) -> PatchSet:
        """Select the faces at ``indices``."""
        idx = np.asarray(indices)
        return PatchSet(
            [self.names[i] for i in idx],
            self.patches[idx],
            self.landmarks[idx],
            self.mask[idx],
            self.box_side,
        )


def build_patch_set(
    folders: Sequence[Path],
    input_size: int,
    cache_dir: Path | None = None,
    context: float = 1.75,
    resolution: float = 1.5,
) -> PatchSet:
    """Decode 300-W folders into a :class:`PatchSet`, cached as an npz file in ``cache_dir``.

    A patch covers ``context`` times the landmark crop box at ``resolution`` times the network
    input's pixels per box side, so augmentation (rotation up to 45 degrees, 15% zoom, 5% shift)
    never reads outside it and never upsamples. The cache file is named after a hash of the
    folder list and sizes, so different data never share (or overwrite) a cache.
    """
    box_side = resolution * input_size
    patch_size = int(round(context * box_side))
    key = json.dumps(
        {
            "folders": [str(f) for f in folders],
            "input": input_size,
            "context": context,
            "resolution": resolution,
        }
    )
    cache_file = None
    if cache_dir is not None:
        cache_file = (
            cache_dir / f"patches_{input_size}_{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
        )
    if cache_file is not None and cache_file.is_file():
        cached = np.load(cache_file, allow_pickle=False)
        if str(cached["key"]) == key:
            return PatchSet(
                list(cached["names"]),
                cached["patches"],
                cached["landmarks"],
                cached["mask"],
                box_side,
            )
    paths = [p for folder in folders for p in sorted(Path(folder).glob("*.pts"))]
    names, patches, landmarks, masks = [], [], [], []
    for sample in tqdm(
        (s for folder in folders for s in iter_300w(folder)),
        total=len(paths),
        desc="decoding faces",
        unit="face",
    ):
        box = square_box_from_landmarks(sample.landmarks)
        wide = SquareBox(box.cx, box.cy, box.side * context)
        affine = crop_affine(wide, patch_size)
        names.append(sample.name)
        patches.append(crop_image(sample.image, affine, patch_size))
        landmarks.append(apply_affine(sample.landmarks, affine))
        masks.append(sample.mask)
    result = PatchSet(names, np.stack(patches), np.stack(landmarks), np.stack(masks), box_side)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache_file,
            key=key,
            names=np.array(names),
            patches=result.patches,
            landmarks=result.landmarks,
            mask=result.mask,
        )
    return result


def split_train_val(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle of ``count`` indices into (train, validation), as the paper's 90/10 split."""
    order = np.random.default_rng(seed).permutation(count)
    n_val = int(round(count * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
