"""Fitting the occlusion-aware regressor (OR) cascade on MNN outputs (paper section 3.2).

This module is the fit alone, on arrays; collecting the MNN outputs, reporting and the
command line are in :mod:`headpose_training.occlusion_regressor_training`.

The OR learns to correct the rigid projection of the mean 3D face (placed with ``p^AE``)
towards the annotated landmarks, using only what the MNN gives at inference: heatmaps,
visibilities and ``p^AE``. It is therefore fitted on the *exported* MNN's outputs over
training crops (cropped with the inference core's own crop code), never on labels directly.

Fitting is gradient-boosted regression trees as in Kazemi & Sullivan's ERT, with the
differences that make it the paper's OR:

- every tree is tied to one landmark and splits on differences of that landmark's *own*
  heatmap values at the FREAK pattern (:mod:`headpose_ros.core.occlusion_regressor`);
- a tree is fitted on, and updates, only the samples where its landmark is not occluded,
  which is exactly what inference does when it drops occluded landmarks' trees;
- the initial pose is jittered (yaw +/-20, pitch +/-10, roll +/-10 degrees, paper-notes.md) so
  the cascade learns to recover from ``p^AE`` errors;
- leaves store whole-shape residuals as coefficients of a per-stage shape basis (the leading
  right singular vectors of that stage's residuals), which keeps the artefact a few MB and
  restricts every update to plausible shape changes.

Features, tree traversal and the similarity transform are the inference core's numpy reference
functions, so the trees are fitted on exactly the numbers inference computes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numba
import numpy as np
from tqdm import tqdm

from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.metrics import landmark_normaliser, nme_per_face
from headpose_ros.core.occlusion_regressor import (
    OcclusionRegressor,
    freak_pattern,
    initial_occlusion,
    initial_shape,
    leaf_indices,
    round_leaf_coefficients,
    shape_indexed_features,
    similarity_from_mean,
    stage_diameters,
)

__all__ = [
    "OrFitConfig",
    "OrTrainingSet",
    "basis_coefficients",
    "first_stages",
    "fit_occlusion_regressor",
    "jittered_poses",
    "nme_interocular",
    "normalised_mean_shape",
    "refine_as_inference",
    "select_stages",
]


@dataclass(frozen=True)
class OrFitConfig:
    """Cascade size and fitting hyper-parameters.

    The defaults keep the artefact under 2 MB and inference near 1 ms per face on two CPU
    cores. Kazemi & Sullivan use 10 stages of 500 depth-4 trees with shrinkage 0.1; with only
    two trees per landmark and stage a larger step (0.2) converges within 10 stages, and the
    leaf ridge term (a prior of 50 samples at zero) keeps thinly populated leaves from
    memorising a few faces. Chosen on the validation split, never on helen_test.
    """

    num_stages: int = 10
    trees_per_landmark: int = 2
    depth: int = 4
    basis_size: int = 32
    candidate_splits: int = 20
    shrinkage: float = 0.2
    leaf_regularisation: float = 50.0
    initialisations: int = 6
    yaw_jitter_deg: float = 20.0
    pitch_jitter_deg: float = 10.0
    roll_jitter_deg: float = 10.0
    occlusion_threshold: float = 0.5
    crop_variants: int = 2
    aflw_faces: int = 3000
    aflw_crop_variants: int = 1
    seed: int = 0


@dataclass(frozen=True)
class OrTrainingSet:
    """What the OR is fitted on, one row per training crop.

    ``heatmaps`` (M, L, H, W) as the MNN outputs them (float16 is enough and halves memory),
    ``pose_ae`` (M, 6), ``visibility`` (M, L) from the MNN; ``targets`` (M, L, 2) the annotated
    landmarks in crop pixels, NaN where unknown (AFLW annotates 10 of the 68, and none that it
    marks hidden); ``crop_size`` the crop side in pixels.
    """

    heatmaps: np.ndarray
    pose_ae: np.ndarray
    visibility: np.ndarray
    targets: np.ndarray
    crop_size: int

    @property
    def complete(self) -> np.ndarray:
        """(M,) whether every landmark of the crop is annotated (the 300-W crops)."""
        return np.all(np.isfinite(self.targets), axis=(1, 2))

    def subset(self, rows: np.ndarray) -> OrTrainingSet:
        """Select the crops at ``rows`` (indices or a boolean mask)."""
        return OrTrainingSet(
            self.heatmaps[rows],
            self.pose_ae[rows],
            self.visibility[rows],
            self.targets[rows],
            self.crop_size,
        )

    def concatenate(self, other: OrTrainingSet) -> OrTrainingSet:
        """Both sets' crops in one set (same crop size)."""
        if other.crop_size != self.crop_size:
            raise ValueError(f"crop sizes differ: {self.crop_size} and {other.crop_size}")
        return OrTrainingSet(
            *(
                np.concatenate([getattr(self, name), getattr(other, name)])
                for name in ("heatmaps", "pose_ae", "visibility", "targets")
            ),
            crop_size=self.crop_size,
        )

    def __post_init__(self) -> None:
        """Refuse inconsistent arrays before hours of fitting depend on them."""
        count, points = self.targets.shape[:2]
        if self.heatmaps.shape[:2] != (count, points) or self.pose_ae.shape != (count, 6):
            raise ValueError(
                f"inconsistent training set: heatmaps {self.heatmaps.shape}, "
                f"pose {self.pose_ae.shape}, "
                f"targets {self.targets.shape}"
            )
        if self.visibility.shape != (count, points):
            raise ValueError(f"visibility must be {(count, points)}, got {self.visibility.shape}")


def normalised_mean_shape(shapes: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Generalised-Procrustes mean of (M, L, 2) shapes: centred, longer box side 1.

    The OR's pattern diameters are fractions of this face size, and residuals live in its frame.
    """
    centred = shapes - shapes.mean(axis=1, keepdims=True)
    mean = centred[0] / np.linalg.norm(centred[0])
    for _ in range(iterations):
        aligned = _to_mean_frame(similarity_from_mean(mean, centred), centred)
        mean = aligned.mean(axis=0)
        mean /= np.linalg.norm(mean)
    mean -= mean.mean(axis=0)
    return mean / np.ptp(mean, axis=0).max()


def _to_mean_frame(transforms: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Undo the (N, 2, 2) similarities on (N, L, 2) vectors: ``A^-1 = A^T / det A``."""
    det = transforms[:, 0, 0] ** 2 + transforms[:, 1, 0] ** 2
    return np.einsum("nji,nlj->nli", transforms, vectors) / det[:, None, None]


def jittered_poses(
    pose_ae: np.ndarray, config: OrFitConfig, rng: np.random.Generator
) -> np.ndarray:
    """``config.initialisations`` copies of every pose, (M, 6) -> (R*M, 6), copy 0 unjittered.

    Uniform angle noise within the paper-notes ranges; translation is kept, because the
    MNN's ``p^AE`` places the face's centre and scale far better than its rotation.
    """
    copies = np.tile(pose_ae, (config.initialisations, 1)).astype(np.float64)
    limits = np.array([config.yaw_jitter_deg, config.pitch_jitter_deg, config.roll_jitter_deg])
    noise = rng.uniform(-1.0, 1.0, size=(len(copies), 3)) * limits
    noise[: len(pose_ae)] = 0.0
    copies[:, :3] += noise
    return copies


@numba.njit(cache=True)
def _fit_tree(
    features: np.ndarray,
    targets: np.ndarray,
    depth: int,
    candidates: int,
    regularisation: float,
    seed: int,
) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:  # pragma: no cover - compiled
    """Greedy least-squares regression tree on pattern-value differences.

    ``features`` (N, P), ``targets`` (N, K). At every node ``candidates`` random pairs of pattern
    points are tried, each with the threshold half-way between two random samples' (different)
    differences, so no training sample sits on a threshold where the last-bit differences
    between the numpy features here and the numba kernel's could send it the other way; the
    pair that most reduces the squared error wins. Returns ``split_a``, ``split_b``,
    ``split_threshold`` (2^D - 1), the per-leaf target sum over ``count + regularisation``
    (2^D, K; a ridge-shrunk mean, so that sparse leaves hold small, trustworthy steps) and the
    leaf of every sample (N,).
    """
    np.random.seed(seed)
    num, num_pattern = features.shape
    components = targets.shape[1]
    nodes = 2**depth - 1
    split_a = np.zeros(nodes, dtype=np.int32)
    split_b = np.zeros(nodes, dtype=np.int32)
    threshold = np.zeros(nodes)
    node_of = np.zeros(num, dtype=np.int64)
    for level in range(depth):
        first, count = 2**level - 1, 2**level
        order = np.argsort(node_of, kind="mergesort")
        starts = np.searchsorted(node_of[order], np.arange(first, first + count + 1))
        for j in range(count):
            members = order[starts[j] : starts[j + 1]]
            size = len(members)
            if size < 2:
                continue
            total = np.zeros(components)
            for i in members:
                total += targets[i]
            best_gain, best_a, best_b, best_t = 0.0, 0, 0, 0.0
            right = np.empty(components)
            for _ in range(candidates):
                a = np.random.randint(num_pattern)
                b = np.random.randint(num_pattern - 1)
                b = b + 1 if b >= a else b
                s1, s2 = members[np.random.randint(size)], members[np.random.randint(size)]
                d1 = features[s1, a] - features[s1, b]
                d2 = features[s2, a] - features[s2, b]
                if d1 == d2:
                    continue  # a threshold on a sample's own value would tie under rounding
                t = 0.5 * (d1 + d2)
                right[:] = 0.0
                count_right = 0
                for i in members:
                    if features[i, a] - features[i, b] > t:
                        right += targets[i]
                        count_right += 1
                if count_right == 0 or count_right == size:
                    continue
                left = total - right
                gain = (right @ right) / count_right + (left @ left) / (size - count_right)
                if gain > best_gain:
                    best_gain, best_a, best_b, best_t = gain, a, b, t
            node = first + j
            split_a[node], split_b[node], threshold[node] = best_a, best_b, best_t
        for i in range(num):
            node = node_of[i]
            diff = features[i, split_a[node]] - features[i, split_b[node]]
            node_of[i] = 2 * node + 2 if diff > threshold[node] else 2 * node + 1
    leaf_of = node_of - nodes
    leaf_sum = np.zeros((nodes + 1, components))
    leaf_count = np.zeros(nodes + 1)
    for i in range(num):
        leaf_sum[leaf_of[i]] += targets[i]
        leaf_count[leaf_of[i]] += 1
    for leaf in range(nodes + 1):
        if leaf_count[leaf] > 0:
            leaf_sum[leaf] /= leaf_count[leaf] + regularisation
    return split_a, split_b, threshold, leaf_sum, leaf_of


def _stage_features(
    data: OrTrainingSet,
    shapes: np.ndarray,
    transforms: np.ndarray,
    crop_of: np.ndarray,
    pattern: np.ndarray,
    diameter: float,
    chunk: int = 8192,
) -> np.ndarray:
    """Features of every sample; sample ``i`` reads crop ``crop_of[i]``'s heatmaps (no copies)."""
    features = np.empty(shapes.shape[:2] + (len(pattern),), dtype=np.float64)
    for start in range(0, len(shapes), chunk):
        part = slice(start, start + chunk)
        features[part] = shape_indexed_features(
            data.heatmaps,
            shapes[part],
            transforms[part],
            pattern,
            diameter,
            data.crop_size,
            crop_of[part],
        )
    return features


def basis_coefficients(
    residual: np.ndarray, known: np.ndarray, basis: np.ndarray, ridge: float = 1e-2
) -> np.ndarray:
    """Shape-basis coefficients (N, K) that best explain each residual's *known* coordinates.

    A complete residual is projected (the basis is orthonormal). A partial one (AFLW) is fitted
    by ridge least squares on its known coordinates only, ``(B M B^T + ridge I) c = B M r``, so
    an unannotated point is neither pulled anywhere nor held in place: the basis, learnt from
    complete faces, decides how it moves with the points that are known.
    """
    coefficients = np.nan_to_num(residual) @ basis.T
    partial = np.flatnonzero(~known.all(axis=1))
    for start in range(0, len(partial), 4096):
        rows = partial[start : start + 4096]
        weights = known[rows].astype(np.float64)
        normal = np.einsum("kd,nd,jd->nkj", basis, weights, basis)
        normal += ridge * np.eye(len(basis))[None]
        rhs = np.einsum("kd,nd->nk", basis, weights * np.nan_to_num(residual[rows]))
        coefficients[rows] = np.linalg.solve(normal, rhs[..., None])[..., 0]
    return coefficients


def fit_occlusion_regressor(
    data: OrTrainingSet, mean_face_m: np.ndarray, config: OrFitConfig, progress: bool = True
) -> tuple[OcclusionRegressor, list[float]]:
    """Fit the cascade; return it and the training NME (inter-ocular, %) before and after stages.

    The per-stage error list is the learning curve a person checks first: it must fall.
    """
    rng = np.random.default_rng(config.seed)
    count, points = data.targets.shape[:2]
    poses = jittered_poses(data.pose_ae, config, rng)
    shapes = initial_shape(poses, mean_face_m, data.crop_size)
    # A start the mean face cannot be projected from (p^AE puts it behind the crop camera) is
    # one inference cannot refine either (it keeps the decoded landmarks): leave it out.
    usable = np.all(np.isfinite(shapes), axis=(1, 2))
    if not usable.any():
        raise ValueError("no p^AE pose puts the mean face in front of the crop camera")
    poses, shapes = poses[usable], shapes[usable]
    visibility = np.tile(data.visibility, (config.initialisations, 1))[usable]
    occluded = initial_occlusion(poses, visibility) > config.occlusion_threshold
    targets = np.tile(data.targets, (config.initialisations, 1, 1)).astype(np.float64)[usable]
    complete = np.tile(data.complete, config.initialisations)[usable]
    crop_of = np.tile(np.arange(count), config.initialisations)[usable]
    known = np.isfinite(targets).reshape(len(targets), -1)
    if not complete.any():
        raise ValueError("the OR needs some completely annotated crops (300-W) to fit on")
    mean_shape = normalised_mean_shape(data.targets[data.complete])
    pattern = freak_pattern()
    diameters = stage_diameters(config.num_stages)
    tree_landmark = np.tile(np.arange(points), config.trees_per_landmark)
    trees, nodes = len(tree_landmark), 2**config.depth - 1
    split_a = np.zeros((config.num_stages, trees, nodes), dtype=np.int32)
    split_b = np.zeros_like(split_a)
    split_threshold = np.zeros(split_a.shape)
    leaves = np.zeros((config.num_stages, trees, nodes + 1, config.basis_size), dtype=np.float32)
    basis = np.zeros((config.num_stages, config.basis_size, 2 * points), dtype=np.float32)
    curve = [float(np.mean(nme_interocular(shapes[complete], targets[complete])))]
    stages = tqdm(range(config.num_stages), desc="OR stages", disable=not progress)
    for stage in stages:
        transforms = similarity_from_mean(mean_shape, shapes)
        features = _stage_features(data, shapes, transforms, crop_of, pattern, diameters[stage])
        residual = _to_mean_frame(transforms, targets - shapes).reshape(len(shapes), -1)
        full = np.flatnonzero(complete)
        _, _, right_vectors = np.linalg.svd(
            residual[rng.permutation(full)[:20000]], full_matrices=False
        )
        # A small set has fewer residual directions than the basis holds; the rest stay 0.
        kept = min(config.basis_size, len(right_vectors))
        basis[stage, :kept] = right_vectors[:kept]
        remaining = basis_coefficients(residual, known, basis[stage].astype(np.float64))
        for tree, landmark in enumerate(tree_landmark):
            active = np.flatnonzero(~occluded[:, landmark])
            if len(active) < 2:
                continue
            a, b, threshold, leaf_mean, leaf_of = _fit_tree(
                np.ascontiguousarray(features[active, landmark]),
                np.ascontiguousarray(remaining[active]),
                config.depth,
                config.candidate_splits,
                config.leaf_regularisation,
                int(rng.integers(2**31)),
            )
            split_a[stage, tree], split_b[stage, tree], split_threshold[stage, tree] = (
                a,
                b,
                threshold,
            )
            leaves[stage, tree] = round_leaf_coefficients(config.shrinkage * leaf_mean)
            remaining[active] -= leaves[stage, tree][leaf_of]
        # Apply the stage with the inference core's traversal so training sees inference's shapes;
        # trees come in blocks of one per landmark, so each block reads ``features`` uncopied.
        reached = np.concatenate(
            [
                leaf_indices(
                    features, *(s[stage, block] for s in (split_a, split_b, split_threshold))
                )
                for block in np.split(np.arange(trees), config.trees_per_landmark)
            ],
            axis=1,
        )
        coefficients = leaves[stage][np.arange(trees)[None, :], reached].astype(np.float64)
        summed = np.einsum("ntk,nt->nk", coefficients, ~occluded[:, tree_landmark])
        update = (summed @ basis[stage].astype(np.float64)).reshape(len(shapes), points, 2)
        shapes = shapes + np.einsum("nij,nlj->nli", transforms, update)
        curve.append(float(np.mean(nme_interocular(shapes[complete], targets[complete]))))
        stages.set_postfix(nme=f"{curve[-1]:.2f}%")
    regressor = OcclusionRegressor(
        mean_shape=mean_shape,
        mean_face_m=mean_face_m,
        pattern=pattern,
        diameters=diameters,
        tree_landmark=np.tile(tree_landmark, (config.num_stages, 1)),
        split_a=split_a,
        split_b=split_b,
        split_threshold=split_threshold,
        leaf_coefficients=leaves,
        basis=basis,
        occlusion_threshold=config.occlusion_threshold,
    )
    return regressor, curve


def nme_interocular(predicted: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-face NME in percent, normalised by the outer-eye-corner distance (core metrics)."""
    return 100.0 * nme_per_face(
        predicted, targets, None, landmark_normaliser(targets, "interocular")
    )


def select_stages(
    regressor: OcclusionRegressor, val: OrTrainingSet
) -> tuple[OcclusionRegressor, list[float]]:
    """Keep the cascade prefix with the lowest validation NME; return it and the val curve.

    Validation faces (never seen by the MNN or the OR) decide where refinement stops helping;
    the NME is the inter-ocular one of the completely annotated (300-W) validation crops.
    """
    full = val.complete
    start = initial_shape(val.pose_ae[full], regressor.mean_face_m, val.crop_size)
    curve = [float(np.nanmean(nme_interocular(start, val.targets[full])))]
    for count in range(1, regressor.num_stages + 1):
        refined = refine_as_inference(first_stages(regressor, count), val.subset(full))
        curve.append(float(np.mean(nme_interocular(refined, val.targets[full]))))
    best = 1 + int(np.argmin(curve[1:]))
    return first_stages(regressor, best), curve


def refine_as_inference(regressor: OcclusionRegressor, data: OrTrainingSet) -> np.ndarray:
    """Give the landmarks inference reports: OR-refined, or decoded where the OR cannot start."""
    decoded, _ = decode_heatmaps(data.heatmaps, data.crop_size)
    refined = regressor.refine(data.heatmaps, data.pose_ae, data.visibility, data.crop_size)
    return np.where(np.isfinite(refined), refined, decoded)


def first_stages(regressor: OcclusionRegressor, count: int) -> OcclusionRegressor:
    """Cut the cascade after ``count`` stages (what stage selection keeps)."""
    per_stage = ("diameters", "tree_landmark", "split_a", "split_b", "split_threshold")
    per_stage += ("leaf_coefficients", "basis")
    return replace(regressor, **{name: getattr(regressor, name)[:count] for name in per_stage})
