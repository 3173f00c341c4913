"""Occlusion-aware regressor (OR): regression-tree cascade that refines the MNN landmarks.

Paper section 3.2 and paper-notes.md "Occlusion-aware regressor".

How one face is refined
    1. Initial shape: the mean 3D face projected with ``p^AE`` through the crop camera of
       :mod:`headpose_ros.core.geometry`. Starting from a rigid projection means every update
       is a non-rigid correction of an already valid face shape.
    2. Initial occlusion: landmarks hidden by the head itself at large yaw (the ear-side contour
       beyond 15 degrees, the eye and brow beyond 40 degrees, towards that side), else
       ``1 - visibility`` from the MNN. A landmark is *occluded* when that value exceeds the
       artefact's ``occlusion_threshold``.
    3. ``S`` stages. In each, every landmark's *own* heatmap is sampled (bilinear, divided by
       that map's maximum so the features do not depend on the map's resolution or sharpness)
       at the 43-point FREAK pattern around the landmark. The pattern lives in the
       normalised mean-shape frame and is mapped into the crop by the similarity transform
       mean shape -> current shape; its diameter shrinks linearly over the stages (coarse to
       fine). Each tree is tied to one landmark, splits on differences of two of that landmark's
       pattern values and stores, per leaf, a whole-shape residual as coefficients of the
       stage's shape basis (in the mean-shape frame, so the residual rotates and scales with the
       face). Trees tied to an occluded landmark add nothing: an occluded landmark's heatmap is
       not evidence, so the shape there is carried by the trees of visible landmarks.

Two implementations of the cascade exist on purpose: :func:`_refine_kernel` (numba, the one
inference runs) and :func:`refine_reference` (vectorised numpy, whose feature and tree
functions the training code reuses). A test checks that they agree, which keeps the fast kernel
honest against the readable one the trees were fitted with.

The artefact is a ``.npz`` file (role ``"or"`` in the model manifest) written by
:meth:`OcclusionRegressor.save` and validated by :meth:`OcclusionRegressor.load`, which raises
:class:`~headpose_ros.core.manifest.ModelFileError` naming the file when it is missing,
truncated or inconsistent.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from headpose_ros.core.geometry import (
    crop_camera_matrix,
    pose6_to_rotation_translation,
    project_points,
)
from headpose_ros.core.landmarks import IBUG68, LandmarkScheme
from headpose_ros.core.manifest import ModelFileError

__all__ = [
    "ARTEFACT_FORMAT_VERSION",
    "EAR_CONTOUR_YAW_DEG",
    "EYE_AND_BROW_YAW_DEG",
    "OcclusionRegressor",
    "freak_pattern",
    "initial_occlusion",
    "initial_shape",
    "leaf_indices",
    "refine_reference",
    "round_leaf_coefficients",
    "shape_indexed_features",
    "similarity_from_mean",
    "stage_diameters",
]

ARTEFACT_FORMAT_VERSION = 1

#: Self-occlusion rule (paper-notes.md): |yaw| beyond which the far side's points are hidden.
EAR_CONTOUR_YAW_DEG = 15.0
EYE_AND_BROW_YAW_DEG = 40.0

#: Pattern diameter at the first and last stage, as a fraction of the face size.
FIRST_DIAMETER = 0.255
LAST_DIAMETER = 0.005

_PATTERN_RINGS = 7
_POINTS_PER_RING = 6


def freak_pattern() -> np.ndarray:
    """Return the 43-point FREAK sampling pattern (P, 2): centre plus seven rings of six points.

    paper-notes.md says "six rings of six points plus the centre" *and* "43 points"; those
    disagree (6 x 6 + 1 = 37). FREAK's 43-point pattern has seven rings of six, so we keep 43
    points and the notes' radius range, 0.667 down to 0.083 of a unit. Alternate rings are
    turned by half a step so that neighbouring rings do not sample along the same rays.
    """
    radii = np.linspace(0.667, 0.083, _PATTERN_RINGS)
    points = [np.zeros(2)]
    for ring, radius in enumerate(radii):
        angles = (np.arange(_POINTS_PER_RING) + 0.5 * (ring % 2)) * (
            2.0 * np.pi / _POINTS_PER_RING
        )
        points.extend(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1))
    return np.vstack(points)


def stage_diameters(num_stages: int) -> np.ndarray:
    """Pattern diameter per stage (fraction of face size), shrinking linearly (coarse to fine)."""
    if num_stages == 1:
        return np.array([FIRST_DIAMETER])
    return np.linspace(FIRST_DIAMETER, LAST_DIAMETER, num_stages)


def initial_shape(pose_ae: np.ndarray, mean_face_m: np.ndarray, crop_size: float) -> np.ndarray:
    """Project the mean 3D face with ``p^AE`` through the crop camera: (N, 6) -> (N, L, 2).

    Faces whose pose is not finite or puts any point at or behind the camera get NaN rows;
    :meth:`OcclusionRegressor.refine` passes them through as NaN so that the caller can count
    them as skipped instead of receiving a made-up shape.
    """
    pose_ae = np.asarray(pose_ae, dtype=np.float64).reshape(-1, 6)
    mean_face_m = np.asarray(mean_face_m, dtype=np.float64)
    camera = crop_camera_matrix(float(crop_size))
    shapes = np.full((len(pose_ae), len(mean_face_m), 2), np.nan)
    for face, pose in enumerate(pose_ae):
        if not np.all(np.isfinite(pose)):
            continue
        rotation, translation = pose6_to_rotation_translation(pose)
        depth = mean_face_m @ rotation[2] + translation[2]
        if np.all(depth > 1e-6):
            shapes[face] = project_points(mean_face_m, rotation, translation, camera)
    return shapes


def initial_occlusion(
    pose_ae: np.ndarray, visibility: np.ndarray, scheme: LandmarkScheme = IBUG68
) -> np.ndarray:
    """Occlusion value in [0, 1] per landmark, (N, 6) and (N, L) -> (N, L).

    Positive yaw turns the nose towards the subject's left (geometry.py), so the subject's left
    side turns away from the camera: its ear-side contour is self-occluded beyond
    :data:`EAR_CONTOUR_YAW_DEG`, its eye and brow beyond :data:`EYE_AND_BROW_YAW_DEG` (and the
    mirror case for negative yaw). Self-occluded points get 1; all others ``1 - visibility``.
    """
    pose_ae = np.asarray(pose_ae, dtype=np.float64).reshape(-1, 6)
    visibility = np.asarray(visibility, dtype=np.float64)
    occlusion = 1.0 - np.clip(visibility, 0.0, 1.0)
    yaw = pose_ae[:, 0]
    rules = [
        (yaw > EAR_CONTOUR_YAW_DEG, scheme.left_ear_contour),
        (yaw < -EAR_CONTOUR_YAW_DEG, scheme.right_ear_contour),
        (yaw > EYE_AND_BROW_YAW_DEG, scheme.left_eye_and_brow),
        (yaw < -EYE_AND_BROW_YAW_DEG, scheme.right_eye_and_brow),
    ]
    for faces, points in rules:
        occlusion[np.ix_(faces, list(points))] = 1.0
    return occlusion


def similarity_from_mean(mean_shape: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Least-squares similarity (scaled rotation, no translation) mean shape -> each shape.

    ``mean_shape`` (L, 2) is centred; ``shapes`` (N, L, 2). Returns (N, 2, 2) matrices
    ``[[a, -b], [b, a]]``: pattern offsets and residuals expressed in the mean-shape frame map
    into the crop by left-multiplication.
    """
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    norm = np.sum(mean_shape**2)
    a = np.einsum("lk,nlk->n", mean_shape, centred) / norm
    b = (
        np.einsum("l,nl->n", mean_shape[:, 0], centred[..., 1])
        - np.einsum("l,nl->n", mean_shape[:, 1], centred[..., 0])
    ) / norm
    return np.stack([np.stack([a, -b], axis=-1), np.stack([b, a], axis=-1)], axis=-2)


def shape_indexed_features(
    heatmaps: np.ndarray,
    shapes: np.ndarray,
    transforms: np.ndarray,
    pattern: np.ndarray,
    diameter: float,
    crop_size: float,
    heatmap_rows: np.ndarray | None = None,
) -> np.ndarray:
    """Each landmark's own heatmap sampled at the mapped pattern: -> (N, L, P) float64.

    ``heatmaps`` (N, L, H, W) cover the whole crop, heatmap pixel ``i`` centred at
    ``(i + 0.5) * crop_size / H`` crop pixels; samples are bilinear, zero outside the map, and
    divided by the map's maximum. ``shapes`` (N, L, 2) and ``transforms`` (N, 2, 2) are in crop
    pixels, ``pattern`` (P, 2) in units of ``diameter`` times the mean-shape face size.
    ``heatmap_rows`` (N,) says which row of ``heatmaps`` each shape samples (default: its own),
    so that training can sample many starts of one crop without copying its maps.
    """
    _, points, height, width = heatmaps.shape
    rows = np.arange(len(shapes)) if heatmap_rows is None else np.asarray(heatmap_rows)
    offsets = np.einsum("nij,pj->npi", transforms, pattern * diameter)
    positions = shapes[:, :, None, :] + offsets[:, None, :, :]
    u = positions[..., 0] * (width / crop_size) - 0.5
    v = positions[..., 1] * (height / crop_size) - 0.5
    u0, v0 = np.floor(u), np.floor(v)
    du, dv = u - u0, v - v0
    u0, v0 = u0.astype(np.int64), v0.astype(np.int64)
    face = rows[:, None, None]
    landmark = np.arange(points)[None, :, None]
    values = np.zeros(u.shape)
    for dy, dx, weight in (
        (0, 0, (1 - du) * (1 - dv)),
        (0, 1, du * (1 - dv)),
        (1, 0, (1 - du) * dv),
        (1, 1, du * dv),
    ):
        row, col = v0 + dy, u0 + dx
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        picked = heatmaps[face, landmark, np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)]
        values += np.where(inside, weight * picked.astype(np.float64), 0.0)
    used, position = np.unique(rows, return_inverse=True)
    peak = heatmaps[used].reshape(len(used), points, -1).max(axis=2).astype(np.float64)[position]
    return values / np.maximum(peak, 1e-12)[:, :, None]


def leaf_indices(
    features: np.ndarray, split_a: np.ndarray, split_b: np.ndarray, split_threshold: np.ndarray
) -> np.ndarray:
    """Leaf reached by each sample in each tree: features (N, T, P) -> (N, T) int.

    Trees are complete binary trees stored breadth-first (node ``k`` has children ``2k+1`` and
    ``2k+2``); a sample goes right when ``f[a] - f[b] > threshold``.
    """
    num, trees, _ = features.shape
    depth = int(np.log2(split_a.shape[-1] + 1))
    node = np.zeros((num, trees), dtype=np.int64)
    tree = np.arange(trees)[None, :]
    sample = np.arange(num)[:, None]
    for _ in range(depth):
        a, b = split_a[tree, node], split_b[tree, node]
        right = features[sample, tree, a] - features[sample, tree, b] > split_threshold[tree, node]
        node = 2 * node + 1 + right
    return node - split_a.shape[-1]


@dataclass(frozen=True)
class OcclusionRegressor:
    """A fitted OR cascade; arrays as stored in the ``.npz`` artefact.

    Shapes: ``mean_shape`` (L, 2) centred, face size 1 (longer side of its bounding box);
    ``mean_face_m`` (L, 3) the 3D face of the initial projection; ``pattern`` (P, 2);
    ``diameters`` (S,); per stage ``s`` and tree ``t``: ``tree_landmark`` (S, T),
    ``split_a``/``split_b``/``split_threshold`` (S, T, 2^D - 1), ``leaf_coefficients``
    (S, T, 2^D, K), float16 precision; ``basis`` (S, K, 2L) maps coefficients to a residual
    (x0, y0, x1, ...) in the mean-shape frame.
    """

    mean_shape: np.ndarray
    mean_face_m: np.ndarray
    pattern: np.ndarray
    diameters: np.ndarray
    tree_landmark: np.ndarray
    split_a: np.ndarray
    split_b: np.ndarray
    split_threshold: np.ndarray
    leaf_coefficients: np.ndarray
    basis: np.ndarray
    occlusion_threshold: float = 0.5
    landmark_scheme: str = IBUG68.name

    def __post_init__(self) -> None:
        """Fix dtypes, then check every array against the others so bad artefacts fail at load."""
        for name in _ARRAY_FIELDS:
            value = np.asarray(getattr(self, name), dtype=_ARRAY_DTYPES.get(name, np.float64))
            object.__setattr__(self, name, np.ascontiguousarray(value))
        # Leaves are stored as float16 (half the artefact); round here so that a regressor in
        # memory computes exactly what the same regressor computes after save and load.
        object.__setattr__(
            self, "leaf_coefficients", round_leaf_coefficients(self.leaf_coefficients)
        )
        problems = _consistency_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def num_points(self) -> int:
        """Number of landmarks L."""
        return int(self.mean_shape.shape[0])

    @property
    def num_stages(self) -> int:
        """Number of cascade stages S."""
        return int(self.tree_landmark.shape[0])

    @property
    def depth(self) -> int:
        """Depth D of every tree."""
        return int(np.log2(self.split_a.shape[-1] + 1))

    def save(self, path: Path | str) -> None:
        """Write the compressed ``.npz`` artefact that :meth:`load` reads."""
        arrays = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        arrays["leaf_coefficients"] = arrays["leaf_coefficients"].astype(np.float16)
        np.savez_compressed(
            path,
            format_version=np.int64(ARTEFACT_FORMAT_VERSION),
            occlusion_threshold=np.float64(self.occlusion_threshold),
            landmark_scheme=np.str_(self.landmark_scheme),
            **arrays,
        )

    @classmethod
    def load(cls, path: Path | str, mean_face_m: np.ndarray | None = None) -> OcclusionRegressor:
        """Read and validate an artefact; ``ModelFileError`` naming the file on any problem.

        With ``mean_face_m`` (the manifest's), also refuse an artefact fitted with a different
        mean 3D face: its trees learnt corrections of that face's projection.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"OR artefact not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ModelFileError(
                f"OR artefact {path} is unreadable or truncated: {error}"
            ) from error
        missing = sorted(
            {*_ARRAY_FIELDS, "format_version", "occlusion_threshold", "landmark_scheme"}
            - set(stored)
        )
        if missing:
            raise ModelFileError(f"OR artefact {path} lacks {missing}")
        if int(stored["format_version"]) != ARTEFACT_FORMAT_VERSION:
            raise ModelFileError(
                f"OR artefact {path} has format {int(stored['format_version'])}, "
                f"expected {ARTEFACT_FORMAT_VERSION}"
            )
        try:
            regressor = cls(
                **{name: stored[name] for name in _ARRAY_FIELDS},
                occlusion_threshold=float(stored["occlusion_threshold"]),
                landmark_scheme=str(stored["landmark_scheme"]),
            )
        except ValueError as error:
            raise ModelFileError(f"OR artefact {path} is inconsistent: {error}") from error
        expected_face = None if mean_face_m is None else np.asarray(mean_face_m, dtype=np.float64)
        if expected_face is not None and (
            expected_face.shape != regressor.mean_face_m.shape
            or not np.allclose(regressor.mean_face_m, expected_face, atol=1e-6)
        ):
            raise ModelFileError(
                f"OR artefact {path} was fitted with a different mean 3D face than the manifest's"
            )
        return regressor

    def _check_inputs(
        self, heatmaps: np.ndarray, pose_ae: np.ndarray, visibility: np.ndarray
    ) -> None:
        num = heatmaps.shape[0] if heatmaps.ndim == 4 else -1
        if (
            heatmaps.ndim != 4
            or heatmaps.shape[1] != self.num_points
            or min(heatmaps.shape[2:]) < 2
        ):
            raise ValueError(
                f"heatmaps must be (N, {self.num_points}, H, W) with H, W >= 2, "
                f"got {heatmaps.shape}"
            )
        if pose_ae.shape != (num, 6) or visibility.shape != (num, self.num_points):
            raise ValueError(
                f"pose_ae must be ({num}, 6) and visibility ({num}, {self.num_points}), "
                f"got {pose_ae.shape} and {visibility.shape}"
            )
        if not np.all(np.isfinite(heatmaps)):
            raise ValueError("heatmaps contain non-finite values")

    def refine(
        self, heatmaps: np.ndarray, pose_ae: np.ndarray, visibility: np.ndarray, crop_size: float
    ) -> np.ndarray:
        """Refined landmarks (N, L, 2) float64 in crop pixels, with the numba kernel.

        ``heatmaps`` (N, L, H, W) float32 as the MNN outputs them, ``pose_ae`` (N, 6),
        ``visibility`` (N, L), ``crop_size`` the crop side in pixels. Faces whose ``p^AE``
        cannot place the face in front of the crop camera come back as NaN rows.
        """
        heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
        pose_ae = np.asarray(pose_ae, dtype=np.float64)
        visibility = np.asarray(visibility, dtype=np.float64)
        self._check_inputs(heatmaps, pose_ae, visibility)
        shapes = initial_shape(pose_ae, self.mean_face_m, crop_size)
        occluded = (
            initial_occlusion(pose_ae, visibility, _scheme(self.landmark_scheme))
            > self.occlusion_threshold
        )
        usable = np.all(np.isfinite(shapes), axis=(1, 2))
        out = shapes.copy()
        if np.any(usable):
            out[usable] = _refine_kernel(
                heatmaps[usable],
                shapes[usable],
                occluded[usable],
                float(crop_size),
                self.mean_shape,
                self.pattern,
                self.diameters,
                self.tree_landmark,
                self.split_a,
                self.split_b,
                self.split_threshold,
                self.leaf_coefficients,
                self.basis,
            )
        return out


_ARRAY_FIELDS = (
    "mean_shape",
    "mean_face_m",
    "pattern",
    "diameters",
    "tree_landmark",
    "split_a",
    "split_b",
    "split_threshold",
    "leaf_coefficients",
    "basis",
)
_ARRAY_DTYPES = {
    "tree_landmark": np.int32,
    "split_a": np.int32,
    "split_b": np.int32,
    "split_threshold": np.float64,
    "leaf_coefficients": np.float32,
    "basis": np.float32,
}


def round_leaf_coefficients(values: np.ndarray) -> np.ndarray:
    """Leaf values at the precision the artefact stores them (float16), as float32.

    Non-finite results (values beyond float16's range) are left for the consistency check to
    report instead of being clipped silently.
    """
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float16).astype(np.float32)


def _scheme(name: str) -> LandmarkScheme:
    if name != IBUG68.name:
        raise ValueError(f"unknown landmark scheme {name!r}")
    return IBUG68


def _consistency_problems(regressor: OcclusionRegressor) -> list[str]:
    """Every way the arrays disagree with each other (empty when the artefact is usable)."""
    r = regressor
    problems = []
    if r.landmark_scheme != IBUG68.name:
        problems.append(f"unknown landmark scheme {r.landmark_scheme!r}")
    points = r.mean_shape.shape[0]
    if r.mean_shape.shape != (points, 2) or r.mean_face_m.shape != (points, 3) or points < 2:
        problems.append(
            f"mean_shape {r.mean_shape.shape} and mean_face_m {r.mean_face_m.shape} "
            "must be (L, 2) and (L, 3)"
        )
    if r.pattern.ndim != 2 or r.pattern.shape[1] != 2:
        problems.append(f"pattern must be (P, 2), got {r.pattern.shape}")
    if r.tree_landmark.ndim != 2:
        problems.append(f"tree_landmark must be (S, T), got {r.tree_landmark.shape}")
        return problems
    stages, trees = r.tree_landmark.shape
    nodes = r.split_a.shape[-1] if r.split_a.ndim == 3 else 0
    depth = int(np.log2(nodes + 1)) if nodes > 0 else 0
    components = r.basis.shape[1] if r.basis.ndim == 3 else 0
    expected = {
        "diameters": (stages,),
        "split_a": (stages, trees, nodes),
        "split_b": (stages, trees, nodes),
        "split_threshold": (stages, trees, nodes),
        "leaf_coefficients": (stages, trees, nodes + 1, components),
        "basis": (stages, components, 2 * points),
    }
    for name, shape in expected.items():
        if getattr(r, name).shape != shape:
            problems.append(f"{name} has shape {getattr(r, name).shape}, expected {shape}")
    if depth < 1 or nodes != 2**depth - 1:
        problems.append(f"split arrays must hold 2^D - 1 nodes per tree, got {nodes}")
    if problems:
        return problems
    if np.any((r.tree_landmark < 0) | (r.tree_landmark >= points)):
        problems.append("tree_landmark holds an index outside the landmarks")
    for name in ("split_a", "split_b"):
        if np.any((getattr(r, name) < 0) | (getattr(r, name) >= len(r.pattern))):
            problems.append(f"{name} holds an index outside the pattern")
    for name in (
        "mean_shape",
        "mean_face_m",
        "pattern",
        "diameters",
        "split_threshold",
        "leaf_coefficients",
        "basis",
    ):
        if not np.all(np.isfinite(getattr(r, name))):
            problems.append(f"{name} has non-finite values")
    if not np.sum(r.mean_shape**2) > 0:
        problems.append("mean_shape is degenerate")
    if not 0.0 <= r.occlusion_threshold <= 1.0:
        problems.append(f"occlusion_threshold must be in [0, 1], got {r.occlusion_threshold}")
    return problems


def refine_reference(
    regressor: OcclusionRegressor,
    heatmaps: np.ndarray,
    shapes: np.ndarray,
    occluded: np.ndarray,
    crop_size: float,
) -> np.ndarray:
    """Plain-numpy cascade from given initial ``shapes`` (N, L, 2) and ``occluded`` (N, L) bool.

    Same maths as :func:`_refine_kernel`, written with the vectorised helpers the training
    code fits the trees with; it is the reference the kernel is tested against.
    """
    shapes = np.array(shapes, dtype=np.float64)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    num = len(shapes)
    for stage in range(regressor.num_stages):
        transforms = similarity_from_mean(regressor.mean_shape, shapes)
        features = shape_indexed_features(
            heatmaps, shapes, transforms, regressor.pattern, regressor.diameters[stage], crop_size
        )
        tree_landmark = regressor.tree_landmark[stage]
        leaves = leaf_indices(
            features[:, tree_landmark, :],
            regressor.split_a[stage],
            regressor.split_b[stage],
            regressor.split_threshold[stage],
        )
        coefficients = regressor.leaf_coefficients[stage][
            np.arange(len(tree_landmark))[None, :], leaves
        ]
        active = ~occluded[:, tree_landmark]
        summed = np.einsum("ntk,nt->nk", coefficients.astype(np.float64), active)
        residual = (summed @ regressor.basis[stage].astype(np.float64)).reshape(num, -1, 2)
        shapes += np.einsum("nij,nlj->nli", transforms, residual)
    return shapes


@numba.njit(cache=True, nogil=True)
def _refine_kernel(
    heatmaps: np.ndarray,
    shapes: np.ndarray,
    occluded: np.ndarray,
    crop_size: float,
    mean_shape: np.ndarray,
    pattern: np.ndarray,
    diameters: np.ndarray,
    tree_landmark: np.ndarray,
    split_a: np.ndarray,
    split_b: np.ndarray,
    split_threshold: np.ndarray,
    leaf_coefficients: np.ndarray,
    basis: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled; covered through the numpy-agreement test
    """Numba cascade, one face at a time, loops instead of temporaries (the inference path)."""
    num, points, height, width = heatmaps.shape
    stages, trees, nodes = split_a.shape
    components = basis.shape[1]
    num_pattern = pattern.shape[0]
    scale_u, scale_v = width / crop_size, height / crop_size
    mean_norm = 0.0
    for p in range(points):
        mean_norm += mean_shape[p, 0] ** 2 + mean_shape[p, 1] ** 2
    out = shapes.copy()
    peak = np.empty(points)
    features = np.empty((points, num_pattern))
    summed = np.empty(components)
    for n in range(num):
        for p in range(points):
            best = 1e-12
            for i in range(height):
                for j in range(width):
                    best = max(best, heatmaps[n, p, i, j])
            peak[p] = best
        shape = out[n]
        for s in range(stages):
            cx, cy = 0.0, 0.0
            for p in range(points):
                cx += shape[p, 0]
                cy += shape[p, 1]
            cx /= points
            cy /= points
            a, b = 0.0, 0.0
            for p in range(points):
                x, y = shape[p, 0] - cx, shape[p, 1] - cy
                a += mean_shape[p, 0] * x + mean_shape[p, 1] * y
                b += mean_shape[p, 0] * y - mean_shape[p, 1] * x
            a /= mean_norm
            b /= mean_norm
            for p in range(points):
                for k in range(num_pattern):
                    ox, oy = pattern[k, 0] * diameters[s], pattern[k, 1] * diameters[s]
                    u = (shape[p, 0] + a * ox - b * oy) * scale_u - 0.5
                    v = (shape[p, 1] + b * ox + a * oy) * scale_v - 0.5
                    u0, v0 = np.floor(u), np.floor(v)
                    du, dv = u - u0, v - v0
                    iu, iv = int(u0), int(v0)
                    value = 0.0
                    for dy in range(2):
                        row = iv + dy
                        if row < 0 or row >= height:
                            continue
                        wy = dv if dy == 1 else 1.0 - dv
                        for dx in range(2):
                            col = iu + dx
                            if col < 0 or col >= width:
                                continue
                            wx = du if dx == 1 else 1.0 - du
                            value += wx * wy * heatmaps[n, p, row, col]
                    features[p, k] = value / peak[p]
            summed[:] = 0.0
            for t in range(trees):
                landmark = tree_landmark[s, t]
                if occluded[n, landmark]:
                    continue
                node = 0
                while node < nodes:
                    diff = (
                        features[landmark, split_a[s, t, node]]
                        - features[landmark, split_b[s, t, node]]
                    )
                    node = 2 * node + 2 if diff > split_threshold[s, t, node] else 2 * node + 1
                leaf = node - nodes
                for c in range(components):
                    summed[c] += leaf_coefficients[s, t, leaf, c]
            for p in range(points):
                rx, ry = 0.0, 0.0
                for c in range(components):
                    rx += summed[c] * basis[s, c, 2 * p]
                    ry += summed[c] * basis[s, c, 2 * p + 1]
                shape[p, 0] += a * rx - b * ry
                shape[p, 1] += b * rx + a * ry
    return out
