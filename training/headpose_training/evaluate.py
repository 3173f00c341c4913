"""``headpose-evaluate``: accuracy and speed of an exported model against independent labels.

The model runs through the stages of :class:`headpose_ros.core.pipeline.HeadPoseEstimator`, the
code the ROS node runs (its crop rule, ONNX runner, heatmap decoding and, when the manifest lists
one, its OR), fed with each face's ground-truth box (the paper's protocol for sets without
detector boxes), so what is measured is what ships. The product path with the node's own
detector is measured by ``headpose_run`` on the same images.

Reported (all from :mod:`headpose_ros.core.metrics`):

* **helen_test** (held out, never used to choose anything): NME by inter-ocular distance,
  inter-pupil distance and box height, with and without the OR; failure rate and AUC at 8%
  NME_io; head-pose MAE against PnP labels of the annotated landmarks (near-frontal faces; a
  consistency figure, not an independent one); occlusion recall at 80% precision with one
  synthetic occluder per image.
* **AFLW validation split** (held out from training by photograph): yaw MAE against AFLW's own
  labels overall and per |yaw| bin, with the slope of predicted against labelled yaw in each
  bin; pitch and roll against the PnP labels made with AFLW's yaw fixed; NME of the points
  AFLW has, by face box height; recall at 80% precision of AFLW's real "not visible" labels
  (self-occlusion, hair, hands), and the threshold on the visibility output that reaches it.
* Median single-face latency of the MNN, the encoder and the OR (onnxruntime, 2 threads).

Outputs: ``metrics.json``, per-face CSVs and plots (cumulative errors, yaw scatter).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from headpose_ros.core.config import EstimatorConfig, InferenceConfig
from headpose_ros.core.crop import (
    SquareBox,
    apply_affine,
    crop_affine,
    crop_image,
    invert_affine,
    square_box_from_landmarks,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.inference import ModelRunner, load_model
from headpose_ros.core.manifest import load_manifest
from headpose_ros.core.metrics import (
    YAW_BINS,
    auc_and_failure_rate,
    cumulative_error_curve,
    landmark_normaliser,
    nme_per_face,
    pose_errors,
    recall_at_precision,
)
from headpose_ros.core.occlusion_regressor import OcclusionRegressor
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.tools.annotations import annotated_face
from headpose_training.augment import AugmentConfig, inside_crop, paint_occluder
from headpose_training.checkpoint import load_checkpoint
from headpose_training.config import CACHE_DIR, DEFAULT_DATA, TrainConfig
from headpose_training.data import iter_300w
from headpose_training.faces import FaceSet, label_poses, load_aflw_faces
from headpose_training.pose_labels import pose_from_landmarks
from headpose_training.run_data import cached_mean_face, split_names, split_sources

__all__ = [
    "Predictions",
    "RunRecord",
    "cpu_runner",
    "evaluate_export",
    "json_safe",
    "label_report",
    "main",
    "measure_latency",
    "run_record",
    "yaw_report",
]

FAILURE_THRESHOLD = 0.08
#: Precision at which visibility is scored (the paper's COFW protocol).
VISIBILITY_PRECISION = 0.8


@dataclass
class Predictions:
    """Per-face outputs of one pass (NaN where a face gave no result), in image pixels."""

    landmarks: np.ndarray  # (N, 68, 2)
    angles_deg: np.ndarray  # (N, 3) yaw, pitch, roll
    visibility: np.ndarray  # (N, 68)
    missing: int


def _estimator(manifest_path: Path, use_or: bool, own_detector: bool = False) -> HeadPoseEstimator:
    """Build the node's estimator on the CPU, with or without the OR.

    Fed boxes from outside, or with ``own_detector`` its default detector, run inside each
    frame (synchronous, deterministic) as ``headpose_run`` runs stills.
    """
    config = EstimatorConfig()
    if own_detector:
        config.detector = replace(config.detector, asynchronous=False)
    else:
        config.detector = replace(config.detector, backend="external")
    config.inference = replace(
        config.inference, model_dir=str(manifest_path.parent), device="cpu", use_or=use_or
    )
    return HeadPoseEstimator(config)


def run_estimator(
    estimator: HeadPoseEstimator,
    images: Sequence[np.ndarray],
    boxes: Sequence[SquareBox],
    desc: str,
    border_mode: int = cv2.BORDER_CONSTANT,
) -> Predictions:
    """Every face through the estimator's own stages: crop rule, ONNX runner, decoding, OR.

    Still images have no track history, so the frame-to-frame tracker is bypassed: it would
    (rightly, on video) withhold a face whose landmarks jump in size, and an evaluation must
    score every face instead of dropping the hard ones. ``border_mode`` completes crops that
    reach past the image: black as on the robot, replicated for tight face crops (AFLW) whose
    edge is not the photograph's.
    """
    manifest = estimator.manifest
    size = manifest.input_size
    count = len(images)
    points = manifest.scheme.num_points
    result = Predictions(
        np.full((count, points, 2), np.nan),
        np.full((count, 3), np.nan),
        np.full((count, points), np.nan),
        0,
    )
    for index, (image, box) in enumerate(
        tqdm(list(zip(images, boxes, strict=True)), desc=desc, unit="face", mininterval=10)
    ):
        affine = crop_affine(box, size)
        batch = to_network_input(
            crop_image(image, affine, size, border_mode)[None], manifest.normalisation
        )
        outputs = estimator.runner.run(batch)
        landmarks, _ = decode_heatmaps(outputs.heatmaps, float(size))
        if estimator.regressor is not None:
            refined = estimator.regressor.refine(
                outputs.heatmaps, outputs.pose_ae, outputs.visibility, float(size)
            )
            landmarks = np.where(np.isfinite(refined), refined, landmarks)
        values = np.concatenate([outputs.pose_ed[0], landmarks[0].ravel(), outputs.visibility[0]])
        if not np.all(np.isfinite(values)):
            result.missing += 1
            continue
        result.angles_deg[index] = outputs.pose_ed[0, :3]
        result.landmarks[index] = apply_affine(landmarks[0], invert_affine(affine))
        result.visibility[index] = outputs.visibility[0]
    return result


def product_path(
    manifest_path: Path, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], desc: str
) -> Predictions:
    """Every image through the estimator as ``headpose_run`` runs stills: its own detector.

    Each image is a new sequence (detection in the frame, deterministic); the face scored is
    the one overlapping the annotated box (``tools.annotations.annotated_face``), so a missed
    face counts as missing (``missing``), never another face in its place.
    """
    estimator = _estimator(manifest_path, use_or=True, own_detector=True)
    points = estimator.manifest.scheme.num_points
    count = len(images)
    result = Predictions(
        np.full((count, points, 2), np.nan),
        np.full((count, 3), np.nan),
        np.full((count, points), np.nan),
        0,
    )
    try:
        for index, (image, box) in enumerate(
            tqdm(list(zip(images, boxes, strict=True)), desc=desc, unit="image", mininterval=10)
        ):
            estimator.reset()
            frame = estimator.estimate(image, (index + 1) * 1_000_000_000)
            face = annotated_face(frame.faces, np.asarray(box, dtype=np.float64))
            if face is None or face.landmarks is None:
                result.missing += 1
                continue
            result.angles_deg[index] = np.rad2deg([face.yaw, face.pitch, face.roll])
            result.landmarks[index] = face.landmarks
            result.visibility[index] = face.visibility
    finally:
        estimator.close()
    return result


def _timed_ms(call: Callable[[], object], repeats: int, warm_up: int = 10) -> dict[str, float]:
    """Median and 95th percentile milliseconds of ``call`` after a few warm-up calls."""
    for _ in range(warm_up):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return {"p50": 1000 * float(np.median(times)), "p95": 1000 * float(np.percentile(times, 95))}


def cpu_runner(model_dir: Path, role: str, precision: str, threads: int = 2) -> ModelRunner:
    """Build the core's runner of ``role`` ("mnn" or "encoder") on the CPU, else as the node."""
    config = InferenceConfig(
        model_dir=str(model_dir),
        device="cpu",
        precision=precision,
        threads=threads,
        encoder_only=role == "encoder",
    )
    return ModelRunner(load_model(config), config)


def measure_latency(manifest_path: Path, repeats: int = 200, threads: int = 2) -> dict[str, float]:
    """Single-face milliseconds of each shipped stage, run as the product runs them.

    The network through the core's :class:`ModelRunner` with ``threads`` onnxruntime threads
    and the default settings (so with mirror averaging when that is on, one batch of two, and
    in the precision the CPU gets by default), the encoder alone the same way, and the OR on
    the network's real outputs. ``<role>_float32_ms_*`` time the float files as well, when
    the default is int8.
    """
    manifest, files = load_manifest(manifest_path)
    size = manifest.input_size
    batch = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    latency: dict[str, float] = {}
    outputs = None
    for role in ("mnn", "encoder"):
        if role not in files:
            continue
        default = cpu_runner(manifest_path.parent, role, "auto", threads)
        runners = {role: default}
        if default.precision == "int8":
            runners[f"{role}_float32"] = cpu_runner(manifest_path.parent, role, "float32", threads)
        for name, runner in runners.items():
            timing = _timed_ms(lambda runner=runner: runner.run(batch), repeats)
            latency.update({f"{name}_ms_{key}": value for key, value in timing.items()})
        if role == "mnn":
            outputs = default.run(batch)
            latency["mirror_average"] = float(default.mirror_average)
            latency["int8"] = float(default.precision == "int8")
    if "or" in files and outputs is not None:
        regressor = OcclusionRegressor.load(files["or"], manifest.mean_face_m)
        args = (outputs.heatmaps, outputs.pose_ae, outputs.visibility, float(size))
        timing = _timed_ms(lambda: regressor.refine(*args), repeats)
        latency.update({f"or_ms_{key}": value for key, value in timing.items()})
    return latency


def yaw_report(predicted_deg: np.ndarray, labelled_deg: np.ndarray) -> dict[str, Any]:
    """Yaw MAE and the slope of predicted against labelled yaw, overall and per |yaw| bin.

    A slope under 1 inside a bin is the "compressed angles" failure: the model reports a
    65-degree turn as 27 degrees. The bins are :data:`~headpose_ros.core.metrics.YAW_BINS`;
    faces labelled beyond 90 degrees count only in the overall figures.
    """
    predicted, labelled = np.asarray(predicted_deg, float), np.asarray(labelled_deg, float)
    finite = np.isfinite(predicted) & np.isfinite(labelled)
    predicted, labelled = predicted[finite], labelled[finite]
    error = np.abs((predicted - labelled + 180.0) % 360.0 - 180.0)

    def summary(selected: np.ndarray) -> dict[str, float]:
        count = int(selected.sum())
        mae = float(error[selected].mean()) if count else float("nan")
        # A slope needs a spread of labels; three faces is the least that shows a trend.
        fit = count >= 3 and np.ptp(labelled[selected]) > 0
        slope = float(np.polyfit(labelled[selected], predicted[selected], 1)[0]) if fit else np.nan
        return {"count": count, "mae": mae, "slope": float(slope)}

    bins = {}
    for index, (low, high) in enumerate(YAW_BINS):
        last = index == len(YAW_BINS) - 1
        magnitude = np.abs(labelled)
        selected = (magnitude >= low) & ((magnitude <= high) if last else (magnitude < high))
        bins[f"[{low:g},{high:g}{']' if last else ')'}"] = summary(selected)
    return {"overall": summary(np.ones(len(labelled), bool)), "by_abs_yaw": bins}


def _plot_curves(curves: dict[str, np.ndarray], max_error: float, xlabel: str, path: Path) -> None:
    """Cumulative error distribution curves, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4.5))
    for label, errors in curves.items():
        x, y = cumulative_error_curve(errors, max_error)
        axis.plot(x, 100 * y, label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("faces (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_yaw(predicted: np.ndarray, labelled: np.ndarray, path: Path) -> None:
    """Predicted against labelled yaw on the AFLW validation faces, with the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(5, 5))
    axis.scatter(labelled, predicted, s=3, alpha=0.4)
    axis.plot([-100, 100], [-100, 100], "k--", linewidth=1)
    axis.set(
        xlabel="AFLW yaw label (deg)",
        ylabel="predicted yaw (deg)",
        title="AFLW validation split",
        xlim=(-100, 100),
        ylim=(-100, 100),
    )
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _nme_summary(errors: np.ndarray) -> dict[str, float]:
    auc, failures = auc_and_failure_rate(errors, FAILURE_THRESHOLD)
    return {
        "mean_pct": 100 * float(np.nanmean(errors)),
        "auc_8pct": auc,
        "failure_rate_8pct": failures,
    }


def json_safe(value: Any) -> Any:
    """Replace NaN/inf (an empty yaw bin, no threshold) by None so the JSON stays standard."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _helen_test(manifest_path: Path, test_dir: Path, out_dir: Path, seed: int) -> dict[str, Any]:
    """Landmarks, PnP-label pose and synthetic-occluder visibility on the 300-W test folder."""
    manifest, files = load_manifest(manifest_path)
    samples = list(iter_300w(test_dir))
    gt = np.stack([s.landmarks for s in samples])
    size = manifest.input_size
    boxes = [square_box_from_landmarks(s.landmarks, manifest.crop_margin) for s in samples]
    labels_deg = np.stack(
        [
            pose_from_landmarks(
                apply_affine(s.landmarks, crop_affine(box, size)), manifest.mean_face_m, size
            )[:3]
            for s, box in zip(samples, boxes, strict=True)
        ]
    )
    images = [s.image for s in samples]
    passes = {"mnn": run_estimator(_estimator(manifest_path, False), images, boxes, "MNN")}
    if "or" in files:
        passes["mnn+or"] = run_estimator(_estimator(manifest_path, True), images, boxes, "MNN+OR")
    landmark_boxes = [np.r_[s.landmarks.min(axis=0), s.landmarks.max(axis=0)] for s in samples]
    passes["product_path"] = product_path(
        manifest_path, images, landmark_boxes, "helen_test, own detector"
    )

    rng = np.random.default_rng(seed)
    occluded_images, occluded_truth = [], []
    for sample, box in zip(samples, boxes, strict=True):
        image = sample.image.copy()
        visible = paint_occluder(
            image, sample.landmarks, box.side, AugmentConfig().occluder_size, rng
        )
        occluded_images.append(image)
        occluded_truth.append(visible)
    occluded = run_estimator(
        _estimator(manifest_path, False), occluded_images, boxes, "MNN, occluded"
    )

    normalisers = {
        kind: landmark_normaliser(gt, kind) for kind in ("interocular", "interpupil", "box_height")
    }
    metrics: dict[str, Any] = {
        "faces": len(samples),
        "boxes": "ground-truth landmark box; product_path: the estimator's own detector",
        "product_path_faces_found": len(samples) - passes["product_path"].missing,
    }
    errors_io = {}
    for name, result in passes.items():
        per_kind = {
            kind: nme_per_face(result.landmarks, gt, None, norm)
            for kind, norm in normalisers.items()
        }
        errors_io[name] = per_kind["interocular"]
        metrics[f"nme_{name}"] = {kind: _nme_summary(err) for kind, err in per_kind.items()}
        metrics[f"nme_{name}"]["faces_without_result"] = result.missing
    finite = np.all(np.isfinite(passes["mnn"].angles_deg), axis=1)
    pose = pose_errors(passes["mnn"].angles_deg[finite], labels_deg[finite])
    metrics["pose_mae_deg_vs_pnp_labels"] = {"overall": pose.mae, "by_abs_yaw": pose.by_yaw_bin()}

    in_crop = np.stack(
        [
            inside_crop(apply_affine(s.landmarks, crop_affine(box, size)), size)
            for s, box in zip(samples, boxes, strict=True)
        ]
    )
    truth = np.stack(occluded_truth)
    usable = in_crop & np.isfinite(occluded.visibility)
    recall, threshold = recall_at_precision(
        1.0 - occluded.visibility[usable], truth[usable] == 0, VISIBILITY_PRECISION
    )
    metrics["visibility_synthetic_occluders"] = {
        "occlusion_recall_at_80pct_precision": recall,
        "threshold_on_1_minus_visibility": threshold,
        "occluded_landmarks": int((truth[usable] == 0).sum()),
        "landmarks": int(usable.sum()),
    }
    with open(out_dir / "helen_test_per_face.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            ["image", "yaw_pnp", "pitch_pnp", "roll_pnp", "yaw", "pitch", "roll"]
            + [f"nme_io_{name}" for name in passes]
        )
        for index, sample in enumerate(samples):
            row = [sample.name, *labels_deg[index], *passes["mnn"].angles_deg[index]]
            row += [errors_io[name][index] for name in passes]
            writer.writerow([f"{v:.5f}" if isinstance(v, float) else v for v in row])
    _plot_curves(
        {name.upper(): 100 * err for name, err in errors_io.items()},
        15.0,
        "NME, % of inter-ocular distance (helen_test)",
        out_dir / "ced_nme_helen_test.png",
    )
    return metrics


def aflw_scenes(
    faces: FaceSet, crop_margin: float, scale: float = 3.0, side: int = 600
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each AFLW crop scaled and centred in a larger frame, and its face box there.

    The crops are tight cut-outs of bigger photographs; a detector needs the face in a frame,
    as in large-pose test photos (faces of 300-400 px in 450-600 px images). The frame's
    margin replicates the crop's border. The box is the landmark-convention square of the
    face's crop box (``crop_margin`` removed), for matching the detected face by overlap.
    """
    scenes, boxes = [], []
    for index in range(len(faces)):
        crop = cv2.resize(faces.images[index], None, fx=scale, fy=scale)
        pad = (side - crop.shape[0]) // 2
        scenes.append(cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
        box = faces.box(index)
        half = box.side / (1.0 + 2.0 * crop_margin) / 2.0
        corners = np.array([box.cx - half, box.cy - half, box.cx + half, box.cy + half])
        boxes.append(corners * scale + pad)
    return scenes, boxes


def _found_by_bin(found: Predictions, yaw_label: np.ndarray) -> dict[str, float]:
    """Share of faces the product path found, per |yaw| bin of the label."""
    hit = np.isfinite(found.angles_deg[:, 0])
    shares = {}
    for low, high in YAW_BINS:
        chosen = (np.abs(yaw_label) >= low) & (np.abs(yaw_label) < high + 1e-9)
        shares[f"[{low:g},{high:g}]"] = float(hit[chosen].mean()) if chosen.any() else float("nan")
    return shares


@dataclass(frozen=True)
class RunRecord:
    """What the evaluation takes from the training run: its config, split and mean face."""

    config: TrainConfig
    split: dict[str, dict[str, list[str]]]
    mean_face_mm: np.ndarray


def run_record(
    manifest_path: Path,
    checkpoint_path: Path | None,
    data_root: Path,
    cache_dir: Path | None = CACHE_DIR,
) -> RunRecord:
    """Read the run's record from its checkpoint or, without one, rebuild it from the manifest.

    The manifest stores the run's config and its face counts per source and side; the split is
    seeded and the mean-face fit deterministic (:mod:`headpose_training.run_data`), so a
    clean clone, which has the shipped model but not its run folder, evaluates the same held-out
    faces. A rebuilt split whose counts differ from the recorded ones (other data) is refused.
    """
    if checkpoint_path is not None:
        _, checkpoint = load_checkpoint(checkpoint_path)
        return RunRecord(checkpoint.config, checkpoint.split, checkpoint.mean_face_mm)
    training = json.loads(Path(manifest_path).read_text())["training"]
    config = TrainConfig.from_dict(training["config"])
    train, val = split_sources(config, data_root, cache_dir)
    split = split_names(train, val)
    counts = {
        source: {side: len(names) for side, names in sides.items()}
        for source, sides in split.items()
    }
    if counts != training["data"]["faces"]:
        raise ValueError(
            f"the split rebuilt from {manifest_path}'s config has {counts} faces, the run "
            f"recorded {training['data']['faces']}: not the data it was trained on "
            "(pass its --checkpoint)"
        )
    return RunRecord(config, split, cached_mean_face(config, train, cache_dir))


def aflw_validation_faces(record: RunRecord, every_aflw_face: FaceSet) -> FaceSet:
    """Pick the AFLW faces the run held out, pose-labelled with its own mean face."""
    wanted = set(record.split["aflw"]["val"])
    chosen = [i for i, name in enumerate(every_aflw_face.names) if name in wanted]
    return label_poses(
        every_aflw_face.subset(chosen), record.mean_face_mm, record.config.model.input_size
    )


def _aflw_validation(manifest_path: Path, faces: FaceSet, out_dir: Path) -> dict[str, Any]:
    """Yaw against AFLW's labels, landmarks and real visibility on the held-out AFLW faces."""
    manifest, files = load_manifest(manifest_path)
    boxes = [faces.box(i) for i in range(len(faces))]
    images = list(faces.images)
    use_or = "or" in files
    result = run_estimator(
        _estimator(manifest_path, use_or),
        images,
        boxes,
        "AFLW validation",
        cv2.BORDER_REPLICATE,
    )
    labelled = faces.pose_mask > 0
    yaw = yaw_report(result.angles_deg[labelled, 0], faces.yaw_label[labelled])
    scenes, scene_boxes = aflw_scenes(faces, manifest.crop_margin)
    found = product_path(manifest_path, scenes, scene_boxes, "AFLW validation, own detector")
    product_yaw = yaw_report(found.angles_deg[labelled, 0], faces.yaw_label[labelled])
    others = np.abs(
        (result.angles_deg[labelled, 1:] - faces.poses[labelled, 1:3] + 180.0) % 360.0 - 180.0
    )
    face_size = faces.boxes[:, 2] / (1.0 + 2.0 * manifest.crop_margin)
    nme = nme_per_face(result.landmarks, np.nan_to_num(faces.landmarks), faces.mask, face_size)
    mapped = faces.visibility_mask > 0
    usable = mapped & np.isfinite(result.visibility)
    recall, threshold = recall_at_precision(
        1.0 - result.visibility[usable], faces.visibility[usable] == 0, VISIBILITY_PRECISION
    )
    _plot_yaw(result.angles_deg[labelled, 0], faces.yaw_label[labelled], out_dir / "aflw_yaw.png")
    with open(out_dir / "aflw_val_per_face.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["image", "yaw_label", "yaw", "pitch", "roll", "nme_box"])
        for index, name in enumerate(faces.names):
            row = [name, faces.yaw_label[index], *result.angles_deg[index], nme[index]]
            writer.writerow([f"{v:.4f}" if isinstance(v, float) else v for v in row])
    return {
        "faces": len(faces),
        "boxes": "AFLW points' box scaled to the 68-point crop rule",
        "landmarks_from": "MNN+OR" if use_or else "MNN",
        "yaw_vs_aflw_label": yaw,
        "product_path": {
            "scenes": "each crop scaled x3, centred in a 600x600 frame (border replicated)",
            "faces_found": len(faces) - found.missing,
            "found_by_abs_yaw": _found_by_bin(found, faces.yaw_label),
            "yaw_vs_aflw_label": product_yaw,
        },
        "pitch_roll_mae_deg_vs_pnp_with_label_yaw": {
            "pitch": float(np.nanmean(others[:, 0])),
            "roll": float(np.nanmean(others[:, 1])),
        },
        "nme_box_pct_mapped_points": 100 * float(np.nanmean(nme)),
        "visibility_real_self_occlusion": {
            "occlusion_recall_at_80pct_precision": recall,
            "threshold_on_1_minus_visibility": threshold,
            "hidden_landmarks": int((faces.visibility[usable] == 0).sum()),
            "landmarks": int(usable.sum()),
        },
    }


def _free_pnp_yaw(faces: FaceSet, model_m: np.ndarray, crop_size: int) -> np.ndarray:
    """Yaw (deg) by free PnP of each face's visible points against the model; NaN if it fails."""
    yaw = np.full(len(faces), np.nan)
    for index in range(len(faces)):
        points = apply_affine(faces.pnp_points[index], crop_affine(faces.box(index), crop_size))
        try:
            yaw[index] = pose_from_landmarks(points, faces.pnp_weights @ model_m, crop_size)[0]
        except ValueError:
            continue
    return yaw


def label_report(
    validation: FaceSet, everything: FaceSet, model_mm: np.ndarray, crop_size: int
) -> dict[str, Any]:
    """How far free PnP's yaw is from AFLW's label, and how each varies between re-annotations.

    On the AFLW validation faces: yaw by free PnP of the visible points against the run's mean
    face (fitted on training faces), compared with AFLW's label per |yaw| bin, which checks the
    mean face's depth. Over all AFLW crops, on the photographs that appear more than once
    (annotated separately): the mean absolute difference between two copies' AFLW labels and
    between their PnP yaws, per bin: the labels' own noise, which chose AFLW's label for yaw.
    """
    model_m = np.asarray(model_mm, dtype=np.float64) / 1000.0
    free_all = _free_pnp_yaw(everything, model_m, crop_size)
    copies: dict[int, list[int]] = {}
    for index, group in enumerate(everything.groups):
        copies.setdefault(int(group), []).append(index)
    pairs = np.array([members[:2] for members in copies.values() if len(members) > 1], int)
    label = everything.yaw_label
    by_bin: dict[str, dict[str, float]] = {}
    for low, high in YAW_BINS:
        magnitude = np.abs(label[pairs[:, 0]]) if len(pairs) else np.zeros(0)
        chosen = pairs[(magnitude >= low) & (magnitude < high + 1e-9)]
        by_bin[f"[{low:g},{high:g}]"] = {
            "pairs": len(chosen),
            "label_difference_deg": float(np.nanmean(np.abs(np.diff(label[chosen], axis=1))))
            if len(chosen)
            else float("nan"),
            "pnp_difference_deg": float(np.nanmean(np.abs(np.diff(free_all[chosen], axis=1))))
            if len(chosen)
            else float("nan"),
        }
    return {
        "free_pnp_yaw_vs_aflw_label_validation": yaw_report(
            _free_pnp_yaw(validation, model_m, crop_size), validation.yaw_label
        ),
        "duplicate_photographs_all_aflw": by_bin,
    }


def evaluate_export(
    manifest_path: Path,
    checkpoint_path: Path | None,
    data_root: Path,
    out_dir: Path,
    record_in_manifest: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate the model of ``manifest_path`` (trained as ``checkpoint_path`` says).

    Without ``checkpoint_path`` the run's split and mean face are rebuilt from the config the
    manifest records (:func:`run_record`).

    ``data_root`` holds the run's 300-W and AFLW folders. Writes CSVs, plots and
    ``metrics.json`` to ``out_dir`` and returns the metrics; ``record_in_manifest`` also
    stores them in the manifest's training notes (file hashes are unaffected).
    """
    manifest_path = Path(manifest_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = run_record(manifest_path, checkpoint_path, data_root)
    config = record.config
    metrics: dict[str, Any] = {
        "helen_test": _helen_test(
            manifest_path, data_root / config.data_300w / "helen_test", out_dir, seed
        )
    }
    if "aflw" in record.split:
        every_aflw_face = load_aflw_faces(data_root / config.aflw_folder, config.crop_margin, None)
        aflw = aflw_validation_faces(record, every_aflw_face)
        metrics["aflw_validation"] = _aflw_validation(manifest_path, aflw, out_dir)
        metrics["aflw_labels"] = label_report(
            aflw, every_aflw_face, record.mean_face_mm, config.model.input_size
        )
    metrics["latency_ms"] = measure_latency(manifest_path)
    metrics["network_precision"] = (
        "int8 (inference.precision auto on the CPU)"
        if metrics["latency_ms"].get("int8")
        else "float32"
    )
    metrics = json_safe(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    if record_in_manifest:
        from headpose_training.export import add_files_to_manifest

        add_files_to_manifest(manifest_path, {}, {"metrics": metrics})
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate an exported model folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--manifest", type=Path, required=True, help="manifest.json of the exported model"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="the run's last.pt (split, mean face); without it they are rebuilt from the "
        "config the manifest records (same data, same split)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data root")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for CSV, plots and metrics.json"
    )
    parser.add_argument(
        "--record", action="store_true", help="also store the metrics in the manifest"
    )
    args = parser.parse_args(argv)
    metrics = evaluate_export(args.manifest, args.checkpoint, args.data, args.out, args.record)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
