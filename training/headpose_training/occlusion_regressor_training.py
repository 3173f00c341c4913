"""``headpose-train-or``: fit the OR on an exported MNN's outputs, report it, register it.

The fit itself is :mod:`headpose_training.or_fit`; this module chooses the faces and crops it
learns from, runs the exported MNN on them through the inference core, selects the number of
stages on validation faces, writes the report (JSON, CSV, plots) and lists the artefact in the
model's manifest.

Faces: the MNN run's own split, read from its checkpoint, so the OR never learns from a face the
MNN held out. It learns from the 300-W training faces (68 points; ``crop_variants`` crops each)
and from ``aflw_faces`` AFLW training faces (10 mapped points, with AFLW's real hidden points:
the trees of a landmark the MNN calls hidden stay out, as at inference), and keeps the number of
stages that is best on the 300-W validation faces. The report also gives the MNN's own error on
the fitting crops beside the validation crops, which shows how much sharper the MNN is on faces
it was trained on.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from headpose_ros.core.config import InferenceConfig
from headpose_ros.core.crop import (
    SquareBox,
    apply_affine,
    crop_affine,
    crop_image,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.inference import ModelRunner, load_model
from headpose_ros.core.metrics import cumulative_error_curve
from headpose_ros.core.model_paths import MANIFEST_NAME
from headpose_ros.core.occlusion_regressor import OcclusionRegressor, initial_shape
from headpose_training.checkpoint import load_checkpoint
from headpose_training.config import DEFAULT_DATA
from headpose_training.faces import FaceSet, load_300w_faces, load_aflw_faces
from headpose_training.or_fit import (
    OrFitConfig,
    OrTrainingSet,
    fit_occlusion_regressor,
    nme_interocular,
    refine_as_inference,
    select_stages,
)

__all__ = [
    "collect_mnn_outputs",
    "evaluate_regressor",
    "fit_for_model",
    "main",
    "split_faces",
    "time_refine",
]


def _jittered_box(box: SquareBox, rng: np.random.Generator) -> tuple[SquareBox, float]:
    """Perturb a crop box as a detector or tracker might: +/-10% size, +/-5% shift, +/-10 deg."""
    shift = rng.uniform(-0.05, 0.05, size=2) * box.side
    jittered = SquareBox(box.cx + shift[0], box.cy + shift[1], box.side * rng.uniform(0.9, 1.1))
    return jittered, float(np.deg2rad(rng.uniform(-10.0, 10.0)))


def collect_mnn_outputs(
    runner: ModelRunner,
    faces: FaceSet,
    crop_variants: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    desc: str = "MNN on crops",
) -> OrTrainingSet:
    """Run the exported MNN on crops of annotated faces, as the robot would see them.

    Crop ``0`` of every face is the paper's box around its annotated landmarks; the other
    ``crop_variants - 1`` are jittered boxes (:func:`_jittered_box`), so the OR also learns from
    the less tidy crops that detection and tracking give. Targets are the annotations mapped
    into each crop, NaN where the face has none.
    """
    rng = np.random.default_rng(seed)
    size = runner.manifest.input_size
    crops, targets, outputs = [], [], []

    def flush() -> None:
        if crops:
            batch = to_network_input(np.stack(crops), runner.manifest.normalisation)
            outputs.append(runner.run(batch))
            crops.clear()

    for index in tqdm(range(len(faces)), desc=desc, unit="face", mininterval=10):
        box = faces.box(index)
        annotated = np.where(faces.mask[index][:, None] > 0, faces.landmarks[index], np.nan)
        for variant in range(crop_variants):
            crop_box, rotation = (box, 0.0) if variant == 0 else _jittered_box(box, rng)
            affine = crop_affine(crop_box, size, rotation)
            crops.append(crop_image(faces.images[index], affine, size, faces.border_mode))
            targets.append(apply_affine(annotated, affine))
            if len(crops) == batch_size:
                flush()
    flush()
    return OrTrainingSet(
        # float16 halves the memory of tens of thousands of crops' maps; the OR's features
        # are ratios to each map's peak, which that precision keeps to 1e-3.
        heatmaps=np.concatenate([o.heatmaps.astype(np.float16) for o in outputs]),
        pose_ae=np.concatenate([o.pose_ae for o in outputs]).astype(np.float64),
        visibility=np.concatenate([o.visibility for o in outputs]).astype(np.float64),
        targets=np.stack(targets),
        crop_size=size,
    )


def split_faces(checkpoint_path: Path, data_root: Path) -> dict[str, dict[str, FaceSet]]:
    """Load the MNN run's faces by source ("300w", "aflw") and side ("train", "val").

    The split is the one the checkpoint stores, so the OR never learns from a held-out face.
    """
    _, checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.config
    sources = {
        "300w": load_300w_faces(
            [data_root / config.data_300w / split for split in config.train_splits],
            config.model.input_size,
            config.crop_margin,
            None,
        )
    }
    if "aflw" in checkpoint.split:
        sources["aflw"] = load_aflw_faces(data_root / config.aflw_folder, config.crop_margin, None)
    result = {}
    for source, faces in sources.items():
        position = {name: index for index, name in enumerate(faces.names)}
        result[source] = {
            side: faces.subset([position[name] for name in names])
            for side, names in checkpoint.split[source].items()
        }
    return result


def evaluate_regressor(
    regressor: OcclusionRegressor, data: OrTrainingSet
) -> dict[str, np.ndarray]:
    """Per-face NME (inter-ocular, %) of the MNN alone (heatmap decoding) and of MNN + OR.

    "or_start" (the projected mean face) is NaN where ``p^AE`` cannot place it; "mnn_or" is
    what inference reports there, the decoded landmarks.
    """
    decoded, _ = decode_heatmaps(data.heatmaps, data.crop_size)
    refined = refine_as_inference(regressor, data)
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
    return {f"nme_io_{name}_pct": float(np.nanmean(values)) for name, values in nme.items()}


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


def fit_for_model(
    model_dir: Path,
    checkpoint_path: Path,
    data_root: Path,
    report_dir: Path,
    config: OrFitConfig | None = None,
    evaluate_test: bool = False,
    register: bool = False,
) -> dict:
    """Fit the OR on the exported MNN in ``model_dir``; save ``or.npz`` there and report.

    ``config`` defaults to the run configuration's ``occlusion_regressor`` section (stored in
    the checkpoint). ``register`` lists the artefact and its numbers in the folder's manifest,
    which a new artefact's hash requires before the model can be loaded again.
    """
    _, checkpoint = load_checkpoint(checkpoint_path)
    config = config or checkpoint.config.occlusion_regressor
    # Fitted on the float network's outputs, which every device's model reproduces (the int8
    # file within the agreement headpose-quantize records), so one OR serves CPU and GPU.
    inference = InferenceConfig(
        model_dir=str(model_dir), device="cpu", precision="float32", threads=2
    )
    model = load_model(inference)
    runner = ModelRunner(model, inference)
    output = model_dir / "or.npz"
    report_dir.mkdir(parents=True, exist_ok=True)

    faces = split_faces(checkpoint_path, data_root)
    train = collect_mnn_outputs(
        runner, faces["300w"]["train"], config.crop_variants, config.seed, desc="MNN, 300-W train"
    )
    fit_data = train
    if "aflw" in faces and config.aflw_faces > 0:
        aflw_train = faces["aflw"]["train"]
        chosen = np.random.default_rng(config.seed).permutation(len(aflw_train))
        fit_data = train.concatenate(
            collect_mnn_outputs(
                runner,
                aflw_train.subset(np.sort(chosen[: config.aflw_faces])),
                config.aflw_crop_variants,
                config.seed,
                desc="MNN, AFLW train",
            )
        )
    val = collect_mnn_outputs(runner, faces["300w"]["val"], desc="MNN, 300-W validation")
    regressor, curve = fit_occlusion_regressor(fit_data, model.manifest.mean_face_m, config)
    regressor, val_curve = select_stages(regressor, val)
    regressor.save(output)
    regressor = OcclusionRegressor.load(output, model.manifest.mean_face_m)

    results = {
        "train": evaluate_regressor(regressor, train),
        "val": evaluate_regressor(regressor, val),
    }
    if evaluate_test:
        test = load_300w_faces(
            [data_root / checkpoint.config.data_300w / "helen_test"],
            checkpoint.config.model.input_size,
            checkpoint.config.crop_margin,
            None,
        )
        results["helen_test"] = evaluate_regressor(
            regressor, collect_mnn_outputs(runner, test, desc="MNN, helen_test")
        )
    report = {
        "artefact": str(output),
        "artefact_bytes": output.stat().st_size,
        "config": asdict(config),
        "fit_crops": {"300w": len(train.targets), "all": len(fit_data.targets)},
        "train_curve_nme_io_pct": curve,
        "val_curve_nme_io_pct": val_curve,
        "stages_kept": regressor.num_stages,
        "refine_time_single_face": time_refine(regressor, val),
        "crop_box": "annotation box (paper crop rule), first crop plain, the others jittered",
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
    parser = argparse.ArgumentParser(
        prog="headpose-train-or",
        description="Fit the occlusion-aware regressor on an exported MNN's outputs.",
    )
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="folder with manifest.json and the MNN ONNX"
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="the MNN run's last.pt (its split)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data root")
    parser.add_argument(
        "--report-dir", type=Path, default=Path("training/runs/or"), help="plots, CSV, JSON"
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
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a setting of the run's occlusion_regressor section (repeatable)",
    )
    args = parser.parse_args(argv)
    _, checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint.config.occlusion_regressor
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in asdict(config):
            parser.error(f"unknown OR setting {name!r}; known: {', '.join(asdict(config))}")
        config = replace(config, **{name: type(getattr(config, name))(value)})
    report = fit_for_model(
        args.model_dir,
        args.checkpoint,
        args.data,
        args.report_dir,
        config,
        evaluate_test=args.evaluate_test,
        register=args.register,
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
