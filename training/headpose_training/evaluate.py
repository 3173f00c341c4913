"""``headpose-evaluate``: accuracy and speed of an exported model on held-out 300-W images.

The model runs through the stages of :class:`headpose_ros.core.pipeline.HeadPoseEstimator`, the
code the ROS node runs (its crop rule, ONNX runner, heatmap decoding and, when the manifest lists
one, its OR), fed with the ground-truth-landmark box of each face (the paper's protocol for sets
without detector boxes), so what is measured is what ships.

Reported (all from :mod:`headpose_ros.core.metrics`): NME normalised by inter-ocular distance,
inter-pupil distance and box height, with and without the OR; failure rate and AUC at 8% NME_io;
head-pose MAE per angle, overall and by |yaw| bin, against the PnP labels of the ground-truth
landmarks; occlusion recall at 80% precision on the same images with one synthetic occluder
each (seeded); median single-face latency of the MNN, the encoder and the OR. Outputs: a
per-image CSV, cumulative-error PNGs and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from headpose_ros.core.config import EstimatorConfig
from headpose_ros.core.crop import (
    apply_affine,
    crop_affine,
    crop_image,
    invert_affine,
    square_box_from_landmarks,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.manifest import load_manifest
from headpose_ros.core.metrics import (
    auc_and_failure_rate,
    cumulative_error_curve,
    landmark_normaliser,
    nme_per_face,
    pose_errors,
    recall_at_precision,
)
from headpose_ros.core.occlusion_regressor import OcclusionRegressor
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_training.augment import AugmentConfig, inside_crop, paint_occluder
from headpose_training.data import FaceSample, iter_300w, pose_from_landmarks

__all__ = ["Predictions", "evaluate_export", "json_safe", "main", "measure_latency"]

FAILURE_THRESHOLD = 0.08


@dataclass
class Predictions:
    """Per-face outputs of one pass over the test set (NaN where a face gave no result)."""

    landmarks: np.ndarray  # (N, 68, 2) image pixels
    angles_deg: np.ndarray  # (N, 3) yaw, pitch, roll
    visibility: np.ndarray  # (N, 68)
    missing: int


def _estimator(manifest_path: Path, use_or: bool) -> HeadPoseEstimator:
    """Build the node's estimator on the CPU, with or without the OR."""
    config = EstimatorConfig()
    config.detector = replace(config.detector, backend="external")
    config.inference = replace(
        config.inference, model_dir=str(manifest_path.parent), device="cpu", use_or=use_or
    )
    return HeadPoseEstimator(config)


def run_estimator(
    estimator: HeadPoseEstimator, samples: list[FaceSample], images: list[np.ndarray], desc: str
) -> Predictions:
    """Every face through the estimator's own stages: crop rule, ONNX runner, decoding, OR.

    Still images have no track history, so the frame-to-frame tracker is bypassed: it would
    (rightly, on video) withhold a face whose landmarks jump in size, and an evaluation must
    score every face instead of dropping the hard ones.
    """
    manifest = estimator.manifest
    size = manifest.input_size
    count = len(samples)
    result = Predictions(
        np.full((count, 68, 2), np.nan),
        np.full((count, 3), np.nan),
        np.full((count, 68), np.nan),
        0,
    )
    for index, (sample, image) in enumerate(
        tqdm(list(zip(samples, images, strict=True)), desc=desc, unit="face")
    ):
        affine = crop_affine(
            square_box_from_landmarks(sample.landmarks, manifest.crop_margin), size
        )
        batch = to_network_input(crop_image(image, affine, size)[None], manifest.normalisation)
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


def measure_latency(manifest_path: Path, repeats: int = 200, threads: int = 2) -> dict[str, float]:
    """Single-face milliseconds of each shipped stage (onnxruntime with ``threads`` threads)."""
    manifest, files = load_manifest(manifest_path)
    size = manifest.input_size
    feed = {"image": np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)}
    latency = {}
    sessions = {}
    for role in ("mnn", "encoder"):
        if role in files:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            sessions[role] = ort.InferenceSession(
                str(files[role]), options, providers=["CPUExecutionProvider"]
            )
            timing = _timed_ms(lambda session=sessions[role]: session.run(None, feed), repeats)
            latency.update({f"{role}_ms_{key}": value for key, value in timing.items()})
    if "or" in files and "mnn" in sessions:
        session = sessions["mnn"]
        outputs = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True)
        )
        regressor = OcclusionRegressor.load(files["or"], manifest.mean_face_m)
        args = (outputs["heatmaps"], outputs["pose_ae"], outputs["visibility"], float(size))
        timing = _timed_ms(lambda: regressor.refine(*args), repeats)
        latency.update({f"or_ms_{key}": value for key, value in timing.items()})
    return latency


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


def evaluate_export(
    manifest_path: Path,
    test_dir: Path,
    out_dir: Path,
    record_in_manifest: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate the model of ``manifest_path`` on the 300-W folder ``test_dir``.

    Writes ``per_image.csv``, ``ced_nme.png``, ``ced_pose.png`` and ``metrics.json`` to
    ``out_dir`` and returns the metrics; ``record_in_manifest`` also stores them in the
    manifest's training notes (file hashes are unaffected).
    """
    manifest_path = Path(manifest_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest, files = load_manifest(manifest_path)
    samples = list(iter_300w(test_dir))
    gt = np.stack([s.landmarks for s in samples])
    size = manifest.input_size
    labels = []
    for sample in samples:
        affine = crop_affine(
            square_box_from_landmarks(sample.landmarks, manifest.crop_margin), size
        )
        labels.append(
            pose_from_landmarks(
                apply_affine(sample.landmarks, affine), manifest.mean_face_m, size
            )[:3]
        )
    labels_deg = np.stack(labels)

    images = [s.image for s in samples]
    passes = {
        "mnn": run_estimator(_estimator(manifest_path, use_or=False), samples, images, "MNN")
    }
    if "or" in files:
        passes["mnn+or"] = run_estimator(
            _estimator(manifest_path, use_or=True), samples, images, "MNN+OR"
        )

    rng = np.random.default_rng(seed)
    occluded_images, occluded_truth = [], []
    for sample in samples:
        image = sample.image.copy()
        side = square_box_from_landmarks(sample.landmarks, manifest.crop_margin).side
        visible = paint_occluder(image, sample.landmarks, side, AugmentConfig().occluder_size, rng)
        occluded_images.append(image)
        occluded_truth.append(visible)
    occluded = run_estimator(
        _estimator(manifest_path, use_or=False), samples, occluded_images, "MNN, occluded"
    )

    normalisers = {
        kind: landmark_normaliser(gt, kind) for kind in ("interocular", "interpupil", "box_height")
    }
    metrics: dict[str, Any] = {
        "test_set": str(test_dir.name),
        "faces": len(samples),
        "boxes": "ground-truth landmark box",
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
    metrics["pose_mae_deg"] = {"overall": pose.mae, "by_abs_yaw": pose.by_yaw_bin()}

    truth = np.stack(occluded_truth)
    in_crop = np.stack(
        [
            inside_crop(
                apply_affine(
                    s.landmarks,
                    crop_affine(
                        square_box_from_landmarks(s.landmarks, manifest.crop_margin), size
                    ),
                ),
                size,
            )
            for s in samples
        ]
    )
    usable = in_crop & np.isfinite(occluded.visibility)
    recall, threshold = recall_at_precision(
        1.0 - occluded.visibility[usable], truth[usable] == 0, 0.8
    )
    metrics["visibility"] = {
        "occlusion_recall_at_80pct_precision": recall,
        "threshold_on_1_minus_visibility": threshold,
        "occluded_landmarks": int((truth[usable] == 0).sum()),
        "landmarks": int(usable.sum()),
    }
    metrics["latency_ms"] = measure_latency(manifest_path)

    with open(out_dir / "per_image.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        header = ["image", "yaw_gt", "pitch_gt", "roll_gt", "yaw_pred", "pitch_pred", "roll_pred"]
        header += [f"nme_io_{name}" for name in passes] + ["nme_ip_mnn", "nme_box_mnn"]
        writer.writerow(header)
        nme_ip = nme_per_face(passes["mnn"].landmarks, gt, None, normalisers["interpupil"])
        nme_box = nme_per_face(passes["mnn"].landmarks, gt, None, normalisers["box_height"])
        for index, sample in enumerate(samples):
            row = [sample.name, *labels_deg[index], *passes["mnn"].angles_deg[index]]
            row += [errors_io[name][index] for name in passes] + [nme_ip[index], nme_box[index]]
            writer.writerow([f"{v:.5f}" if isinstance(v, float) else v for v in row])
    _plot_curves(
        {name.upper(): 100 * err for name, err in errors_io.items()},
        15.0,
        "NME, % of inter-ocular distance",
        out_dir / "ced_nme.png",
    )
    abs_errors = pose.abs_errors
    _plot_curves(
        {
            "yaw": abs_errors[:, 0],
            "pitch": abs_errors[:, 1],
            "roll": abs_errors[:, 2],
            "mean": abs_errors.mean(axis=1),
        },
        20.0,
        "absolute angle error (deg)",
        out_dir / "ced_pose.png",
    )
    metrics = json_safe(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    if record_in_manifest:
        from headpose_training.export import add_files_to_manifest

        add_files_to_manifest(manifest_path, {}, {"metrics_helen_test": metrics})
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Command line: evaluate an exported model folder on a 300-W test folder."""
    from headpose_training.train import DEFAULT_DATA

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--manifest", type=Path, required=True, help="manifest.json of the exported model"
    )
    parser.add_argument(
        "--test", type=Path, default=DEFAULT_DATA / "helen_test", help="300-W test folder"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for CSV, plots and metrics.json"
    )
    parser.add_argument(
        "--record", action="store_true", help="also store the metrics in the manifest"
    )
    args = parser.parse_args(argv)
    metrics = evaluate_export(args.manifest, args.test, args.out, args.record)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
