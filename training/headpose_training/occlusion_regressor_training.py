"""Fitting the occlusion-aware regressor (OR) cascade on MNN outputs (paper section 3.2).

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

import argparse
import csv
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numba
import numpy as np
from tqdm import tqdm

from headpose_ros.core.config import InferenceConfig
from headpose_ros.core.crop import (
    SquareBox,
    apply_affine,
    crop_affine,
    crop_image,
    square_box_from_landmarks,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.inference import ModelRunner, load_model
from headpose_ros.core.metrics import cumulative_error_curve, landmark_normaliser, nme_per_face
from headpose_ros.core.model_paths import MANIFEST_NAME
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
from headpose_training.data import FaceSample, iter_300w, split_train_val

__all__ = [
    "OrFitConfig",
    "OrTrainingSet",
    "fit_occlusion_regressor",
    "collect_mnn_outputs",
    "evaluate_regressor",
    "fit_for_model",
    "jittered_poses",
    "main",
    "nme_interocular",
    "normalised_mean_shape",
    "select_stages",
    "time_refine",
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
    seed: int = 0


@dataclass(frozen=True)
class OrTrainingSet:
    """What the OR is fitted on, one row per training crop.

    ``heatmaps`` (M, L, H, W) as the MNN outputs them (float16 is enough and halves memory),
    ``pose_ae`` (M, 6), ``visibility`` (M, L) from the MNN; ``targets`` (M, L, 2) the annotated
    landmarks in crop pixels; ``crop_size`` the crop side in pixels.
    """

    heatmaps: np.ndarray
    pose_ae: np.ndarray
    visibility: np.ndarray
    targets: np.ndarray
    crop_size: int

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
    pattern: np.ndarray,
    diameter: float,
) -> np.ndarray:
    """Features of every sample; sample ``r*M + m`` uses crop ``m``'s heatmaps (no copies)."""
    count = len(data.heatmaps)
    features = np.empty(shapes.shape[:2] + (len(pattern),), dtype=np.float64)
    for start in range(0, len(shapes), count):
        chunk = slice(start, start + count)
        features[chunk] = shape_indexed_features(
            data.heatmaps, shapes[chunk], transforms[chunk], pattern, diameter, data.crop_size
        )
    return features


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
    if not np.all(np.isfinite(shapes)):
        raise ValueError(
            "some p^AE poses put the mean face behind the crop camera; check the MNN outputs"
        )
    visibility = np.tile(data.visibility, (config.initialisations, 1))
    occluded = initial_occlusion(poses, visibility) > config.occlusion_threshold
    targets = np.tile(data.targets, (config.initialisations, 1, 1)).astype(np.float64)
    mean_shape = normalised_mean_shape(data.targets)
    pattern = freak_pattern()
    diameters = stage_diameters(config.num_stages)
    tree_landmark = np.tile(np.arange(points), config.trees_per_landmark)
    trees, nodes = len(tree_landmark), 2**config.depth - 1
    split_a = np.zeros((config.num_stages, trees, nodes), dtype=np.int32)
    split_b = np.zeros_like(split_a)
    split_threshold = np.zeros(split_a.shape)
    leaves = np.zeros((config.num_stages, trees, nodes + 1, config.basis_size), dtype=np.float32)
    basis = np.zeros((config.num_stages, config.basis_size, 2 * points), dtype=np.float32)
    curve = [float(np.mean(nme_interocular(shapes, targets)))]
    stages = tqdm(range(config.num_stages), desc="OR stages", disable=not progress)
    for stage in stages:
        transforms = similarity_from_mean(mean_shape, shapes)
        features = _stage_features(data, shapes, transforms, pattern, diameters[stage])
        residual = _to_mean_frame(transforms, targets - shapes).reshape(len(shapes), -1)
        _, _, right_vectors = np.linalg.svd(
            residual[rng.permutation(len(residual))[:20000]], full_matrices=False
        )
        # A small set has fewer residual directions than the basis holds; the rest stay 0.
        kept = min(config.basis_size, len(right_vectors))
        basis[stage, :kept] = right_vectors[:kept]
        remaining = residual @ basis[stage].T.astype(np.float64)
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
        curve.append(float(np.mean(nme_interocular(shapes, targets))))
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


#: Default 300-W training folders (the shipped config's ``train_splits``), in the order the MNN
#: training concatenates them, so that :func:`headpose_training.data.split_train_val` gives the
#: same validation faces; ``headpose-train`` passes its config's own list.
TRAINING_FOLDERS = ("helen_train", "afw")
TEST_FOLDER = "helen_test"


def _jittered_box(box: SquareBox, rng: np.random.Generator) -> tuple[SquareBox, float]:
    """Perturb a crop box as a detector or tracker might: +/-10% size, +/-5% shift, +/-10 deg."""
    shift = rng.uniform(-0.05, 0.05, size=2) * box.side
    jittered = SquareBox(box.cx + shift[0], box.cy + shift[1], box.side * rng.uniform(0.9, 1.1))
    return jittered, float(np.deg2rad(rng.uniform(-10.0, 10.0)))


def collect_mnn_outputs(
    runner: ModelRunner,
    faces: Iterable[FaceSample],
    count: int,
    crop_variants: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    desc: str = "MNN on crops",
) -> OrTrainingSet:
    """Run the exported MNN on crops of annotated faces, as the robot would see them.

    Crop ``0`` of every face is the paper's box around its annotated landmarks; the other
    ``crop_variants - 1`` are jittered boxes (:func:`_jittered_box`), so the OR also learns from
    the less tidy crops that detection and tracking give. Targets are the annotations mapped
    into each crop.
    """
    rng = np.random.default_rng(seed)
    size = runner.manifest.input_size
    crops, targets, outputs = [], [], []

    def flush() -> None:
        if crops:
            batch = to_network_input(np.stack(crops), runner.manifest.normalisation)
            outputs.append(runner.run(batch))
            crops.clear()

    for face in tqdm(faces, total=count, desc=desc, unit="face"):
        box = square_box_from_landmarks(face.landmarks)
        for variant in range(crop_variants):
            crop_box, rotation = (box, 0.0) if variant == 0 else _jittered_box(box, rng)
            affine = crop_affine(crop_box, size, rotation)
            crops.append(crop_image(face.image, affine, size))
            targets.append(apply_affine(face.landmarks, affine))
            if len(crops) == batch_size:
                flush()
    flush()
    return OrTrainingSet(
        heatmaps=np.concatenate([o.heatmaps for o in outputs]),
        pose_ae=np.concatenate([o.pose_ae for o in outputs]).astype(np.float64),
        visibility=np.concatenate([o.visibility for o in outputs]).astype(np.float64),
        targets=np.stack(targets),
        crop_size=size,
    )


def _faces(
    data_root: Path, folder: str, keep: np.ndarray | None = None
) -> tuple[Iterator[FaceSample], int]:
    """Lazily decoded faces of one 300-W folder (only the indices in ``keep``), and their count."""
    total = len(list((data_root / folder).glob("*.pts")))
    wanted = set(range(total)) if keep is None else {int(i) for i in keep}
    return (
        face for index, face in enumerate(iter_300w(data_root / folder)) if index in wanted
    ), len(wanted)


def _training_faces(
    data_root: Path, folders: Sequence[str], val_fraction: float, split_seed: int
) -> dict[str, tuple[Iterator[FaceSample], int]]:
    """Train and validation faces of ``folders``, split as the MNN training splits them."""
    counts = [len(list((data_root / folder).glob("*.pts"))) for folder in folders]
    train, val = split_train_val(sum(counts), val_fraction, split_seed)
    parts: dict[str, tuple[Iterator[FaceSample], int]] = {}
    for name, indices in (("train", train), ("val", val)):
        iterators, total, offset = [], 0, 0
        for folder, count in zip(folders, counts, strict=True):
            local = indices[(indices >= offset) & (indices < offset + count)] - offset
            faces, n = _faces(data_root, folder, local)
            iterators.append(faces)
            total += n
            offset += count
        parts[name] = (itertools.chain(*iterators), total)
    return parts


def select_stages(
    regressor: OcclusionRegressor, val: OrTrainingSet
) -> tuple[OcclusionRegressor, list[float]]:
    """Keep the cascade prefix with the lowest validation NME; return it and the val curve.

    The MNN has seen the OR's training images, so its heatmaps there are sharper than on new
    faces and the finest stages can learn to trust them more than they deserve; validation
    faces (never seen by either model) decide where refinement stops helping.
    """
    start = initial_shape(val.pose_ae, regressor.mean_face_m, val.crop_size)
    curve = [float(np.mean(nme_interocular(start, val.targets)))]
    for count in range(1, regressor.num_stages + 1):
        refined = _first_stages(regressor, count).refine(
            val.heatmaps, val.pose_ae, val.visibility, val.crop_size
        )
        curve.append(float(np.mean(nme_interocular(refined, val.targets))))
    best = 1 + int(np.argmin(curve[1:]))
    return _first_stages(regressor, best), curve


def _first_stages(regressor: OcclusionRegressor, count: int) -> OcclusionRegressor:
    per_stage = ("diameters", "tree_landmark", "split_a", "split_b", "split_threshold")
    per_stage += ("leaf_coefficients", "basis")
    return replace(regressor, **{name: getattr(regressor, name)[:count] for name in per_stage})


def evaluate_regressor(
    regressor: OcclusionRegressor, data: OrTrainingSet
) -> dict[str, np.ndarray]:
    """Per-face NME (inter-ocular, %) of the MNN alone (heatmap decoding) and of MNN + OR."""
    decoded, _ = decode_heatmaps(data.heatmaps, data.crop_size)
    refined = regressor.refine(data.heatmaps, data.pose_ae, data.visibility, data.crop_size)
    initial = initial_shape(data.pose_ae, regressor.mean_face_m, data.crop_size)
    return {
        "mnn_decoded": nme_interocular(decoded, data.targets),
        "or_start": nme_interocular(initial, data.targets),
        "mnn_or": nme_interocular(refined, data.targets),
    }


def time_refine(
    regressor: OcclusionRegressor, data: OrTrainingSet, repeats: int = 200
) -> dict[str, float]:
    """Time single-face :meth:`OcclusionRegressor.refine` calls after warm-up: p50/p95 in ms."""
    regressor.refine(data.heatmaps[:1], data.pose_ae[:1], data.visibility[:1], data.crop_size)
    times = []
    for i in range(repeats):
        face = slice(i % len(data.heatmaps), i % len(data.heatmaps) + 1)
        start = time.perf_counter()
        regressor.refine(
            data.heatmaps[face], data.pose_ae[face], data.visibility[face], data.crop_size
        )
        times.append(1e3 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def _summary(nme: dict[str, np.ndarray]) -> dict[str, float]:
    return {f"nme_io_{name}_pct": float(np.mean(values)) for name, values in nme.items()}


def _write_plots(
    report_dir: Path, curves: dict[str, list[float]], results: dict[str, dict[str, np.ndarray]]
) -> None:
    """Learning curve and cumulative error distributions, the figures a reviewer looks at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 1 + len(results), figsize=(5 * (1 + len(results)), 4))
    for name, curve in curves.items():
        axes[0].plot(range(len(curve)), curve, marker="o", label=name)
    axes[0].legend()
    axes[0].set(
        title="OR error by stage (0 = projected mean face)",
        xlabel="stage",
        ylabel="mean NME_io (%)",
    )
    for axis, (split, nme) in zip(axes[1:], results.items(), strict=True):
        for name, values in nme.items():
            x, y = cumulative_error_curve(values / 100.0, 0.10)
            axis.plot(100 * x, y, label=f"{name} ({np.mean(values):.2f}%)")
        axis.set(title=f"CED on {split}", xlabel="NME_io (%)", ylabel="fraction of faces")
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(report_dir / "or_report.png", dpi=100)
    plt.close(figure)


def _write_csv(report_dir: Path, results: dict[str, dict[str, np.ndarray]]) -> None:
    with open(report_dir / "or_per_face.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["split", "crop", *next(iter(results.values())).keys()])
        for split, nme in results.items():
            for index, row in enumerate(zip(*nme.values(), strict=True)):
                writer.writerow([split, index, *(f"{value:.4f}" for value in row)])


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = OrFitConfig()
    parser = argparse.ArgumentParser(
        prog="headpose-train-or",
        description="Fit the occlusion-aware regressor on an exported MNN's outputs over 300-W "
        "crops.",
    )
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="folder with manifest.json and the MNN ONNX"
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="300-W root holding helen_train/, afw/, helen_test/",
    )
    parser.add_argument(
        "--report-dir", type=Path, default=Path("training/runs/or"), help="plots, CSV, JSON"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="validation share of helen_train + afw"
    )
    parser.add_argument(
        "--split-seed", type=int, default=0, help="seed of the train/validation split"
    )
    parser.add_argument(
        "--evaluate-test",
        action="store_true",
        help="also report helen_test (held out; never tune on it)",
    )
    parser.add_argument(
        "--register",
        action="store_true",
        help="list the artefact (role 'or') and its metrics in MODEL_DIR/manifest.json",
    )
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    return parser.parse_args(argv)


def fit_for_model(
    model_dir: Path,
    data_root: Path,
    report_dir: Path,
    config: OrFitConfig,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    train_folders: Sequence[str] = TRAINING_FOLDERS,
    evaluate_test: bool = False,
    register: bool = False,
) -> dict:
    """Fit the OR on the exported MNN in ``model_dir``; save ``or.npz`` there and report.

    The validation faces are the MNN training's own (same ``train_folders``, ``val_fraction``
    and ``split_seed``), so choosing the number of stages never looks at a face the MNN was not
    tuned on either.
    ``register`` lists the artefact and its numbers in the folder's manifest, which a new
    artefact's hash requires before the model can be loaded again.
    """
    inference = InferenceConfig(model_dir=str(model_dir), device="cpu", threads=2)
    model = load_model(inference)
    runner = ModelRunner(model, inference)
    output = model_dir / "or.npz"
    report_dir.mkdir(parents=True, exist_ok=True)

    parts = _training_faces(data_root, train_folders, val_fraction, split_seed)
    train = collect_mnn_outputs(
        runner, *parts["train"], config.crop_variants, config.seed, desc="MNN on train crops"
    )
    val = collect_mnn_outputs(runner, *parts["val"], desc="MNN on validation crops")
    regressor, curve = fit_occlusion_regressor(train, model.manifest.mean_face_m, config)
    regressor, val_curve = select_stages(regressor, val)
    regressor.save(output)
    regressor = OcclusionRegressor.load(output, model.manifest.mean_face_m)

    results = {"val": evaluate_regressor(regressor, val)}
    if evaluate_test:
        results["helen_test"] = evaluate_regressor(
            regressor,
            collect_mnn_outputs(runner, *_faces(data_root, TEST_FOLDER), desc="MNN on helen_test"),
        )
    report = {
        "artefact": str(output),
        "artefact_bytes": output.stat().st_size,
        "config": asdict(config),
        "train_crops": len(train.targets),
        "train_curve_nme_io_pct": curve,
        "val_curve_nme_io_pct": val_curve,
        "stages_kept": regressor.num_stages,
        "refine_time_single_face": time_refine(regressor, val),
        "crop_box": "GT-landmark box (paper crop rule)",
        **{
            split: {"faces": len(nme["mnn_or"]), **_summary(nme)} for split, nme in results.items()
        },
    }
    (report_dir / "or_report.json").write_text(json.dumps(report, indent=2))
    if register:
        from headpose_training.export import add_files_to_manifest

        notes = {key: report[key] for key in ("config", "stages_kept", "crop_box", *results)}
        add_files_to_manifest(
            model_dir / MANIFEST_NAME, {"or": output}, {"occlusion_regressor": notes}
        )
    _write_plots(report_dir, {"train": curve, "val": val_curve}, results)
    _write_csv(report_dir, results)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: collect MNN outputs, fit, save the artefact, and report NME with and without the OR."""
    args = _parse_args(argv)
    config = OrFitConfig(**{name: getattr(args, name) for name in asdict(OrFitConfig())})
    report = fit_for_model(
        args.model_dir,
        args.data,
        args.report_dir,
        config,
        args.val_fraction,
        args.split_seed,
        evaluate_test=args.evaluate_test,
        register=args.register,
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
