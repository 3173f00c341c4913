"""``headpose-train``: train the MNN on 300-W and AFLW, export it, fit the OR and evaluate.

Read top to bottom: the data (:mod:`headpose_training.run_data`: faces of every source, split
by photograph, the mean 3D face and the pose labels), batch assembly, validation, the loop with
checkpoints (resumable from ``last.pt``), and the command line that chains training, export to
ONNX, the OR fitted on the exported MNN's outputs and the held-out evaluation into one
reproducible command.

Schedule (paper 4.3.2). "pre+sym": heatmaps alone for ``pretrain_epochs``, then all four tasks
of loss (5). "sym": all tasks from scratch. "pose": loss (1) alone (single-task baseline). Adam
at 1e-3, halved when the validation loss has not improved for ``plateau_patience`` epochs; the
second phase starts a fresh optimiser at the base rate, as fine-tuning a pre-trained net does.
A phase ends when its learning rate has been halved below ``min_learning_rate`` (converged),
after its epochs, or when the time budget is spent.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from headpose_ros.core.crop import to_network_input
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.metrics import landmark_normaliser, nme_per_face, pose_errors
from headpose_training.augment import AugmentConfig, FaceLabels, TrainingSample, make_sample
from headpose_training.checkpoint import Checkpoint, save_checkpoint
from headpose_training.config import CACHE_DIR, DEFAULT_DATA, TrainConfig, load_config
from headpose_training.faces import (
    FaceSet,
    draw_epoch,
)
from headpose_training.losses import TASKS, LossWeights, heatmap_entropy_floor, multitask_loss
from headpose_training.model import MNN
from headpose_training.run_data import TrainingData, prepare_data

__all__ = ["main", "train"]

#: Validation crops scored every epoch per source (all 300-W ones; a fixed sample of AFLW's).
_EPOCH_VAL_FACES = 1000


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def face_labels(faces: FaceSet, index: int) -> FaceLabels:
    """Collect the labels of one face, as augmentation takes them."""
    return FaceLabels(
        faces.landmarks[index],
        faces.mask[index],
        faces.visibility[index],
        faces.visibility_mask[index],
        faces.poses[index],
        bool(faces.pose_mask[index]),
    )


def make_samples(
    sets: list[FaceSet],
    draws: list[tuple[int, int]],
    config: TrainConfig,
    augment: AugmentConfig,
    rng: np.random.Generator,
) -> list[TrainingSample]:
    """Cut one sample per (set, face) draw with the given augmentation."""
    return [
        make_sample(
            sets[s].images[i],
            sets[s].box(i),
            face_labels(sets[s], i),
            config.model.input_size,
            augment,
            rng,
            sets[s].border_mode,
        )
        for s, i in draws
    ]


def collate(samples: list[TrainingSample], normalisation: Any) -> dict[str, torch.Tensor]:
    """Stack augmented samples into the tensors the network and losses take."""

    def stack(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(s, name) for s in samples]).astype(np.float32))

    batch = {
        name: stack(name)
        for name in ("landmarks", "mask", "visibility", "visibility_mask", "pose", "pose_mask")
    }
    batch["image"] = torch.from_numpy(
        to_network_input(np.stack([s.crop for s in samples]), normalisation)
    )
    return batch


def pose_statistics(data: TrainingData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the pose labels of one epoch's augmented draws (standardises the heads)."""
    rng = np.random.default_rng(config.seed)
    draws = draw_epoch(
        data.train, data.weights, config.yaw_bin_edges_deg, config.samples_per_epoch, rng
    )
    samples = make_samples(data.train, draws, config, config.augment, rng)
    poses = np.stack([s.pose for s in samples if s.pose_mask])
    return poses.mean(axis=0), poses.std(axis=0)


def validation_batches(
    data: TrainingData, config: TrainConfig
) -> dict[str, dict[str, torch.Tensor]]:
    """Plain crops of each source's validation faces (a fixed sample of at most 1000)."""
    batches = {}
    for faces in data.val:
        chosen = np.random.default_rng(config.seed).permutation(len(faces))[:_EPOCH_VAL_FACES]
        samples = make_samples(
            [faces],
            [(0, int(i)) for i in np.sort(chosen)],
            config,
            AugmentConfig(enabled=False),
            np.random.default_rng(0),
        )
        batches[faces.source] = collate(samples, config.normalisation)
    return batches


@dataclass
class ValidationResult:
    """Validation losses per task (over all sources) and the accuracy figures logged per epoch.

    ``nme`` per source: 300-W by inter-ocular distance, AFLW (its mapped points) by the face
    box height; ``yaw_mae`` per source against its labels (AFLW's own yaw, PnP for 300-W).
    """

    losses: dict[str, float]
    nme: dict[str, float]
    yaw_mae: dict[str, float]
    yaw_mae_by_bin: dict[str, dict[str, float]]


@torch.no_grad()
def validate(
    model: MNN,
    batches: dict[str, dict[str, torch.Tensor]],
    config: TrainConfig,
    mean_face_m: torch.Tensor,
) -> ValidationResult:
    """Losses of every task (whether trained yet or not) and NME/yaw MAE on the fixed crops."""
    model.eval()
    sums: dict[str, float] = dict.fromkeys(TASKS, 0.0)
    count = 0
    nme, yaw_mae, by_bin = {}, {}, {}
    size = config.model.input_size
    for source, batch in batches.items():
        heatmaps, yaws = [], []
        for start in range(0, len(batch["image"]), 64):
            part = {key: value[start : start + 64] for key, value in batch.items()}
            output = model(part["image"])
            _, values = multitask_loss(
                output, part, LossWeights(), mean_face_m, model.pose_std, config.heatmap_sigma
            )
            for name, value in values.items():
                sums[name] += value * len(part["image"])
            count += len(part["image"])
            logits = output.heatmap_logits
            heatmaps.append(torch.softmax(logits.flatten(2), 2).view_as(logits).numpy())
            yaws.append(output.pose_ed[:, 0].numpy())
        predicted, _ = decode_heatmaps(np.concatenate(heatmaps), size)
        truth = batch["landmarks"].numpy().astype(np.float64)
        if source == "300w":
            normaliser = landmark_normaliser(truth, "interocular")
        else:
            normaliser = np.full(len(truth), size / (1.0 + 2.0 * config.crop_margin))
        nme[source] = float(
            np.nanmean(nme_per_face(predicted, truth, batch["mask"].numpy(), normaliser))
        )
        known = batch["pose_mask"].numpy() > 0
        labelled = batch["pose"].numpy()[known, 0]
        errors = pose_errors(
            np.stack([np.concatenate(yaws)[known]] * 3, axis=1),
            np.stack([labelled] * 3, axis=1),
        )
        yaw_mae[source] = errors.mae["yaw"]
        # An empty bin has no figure (None, not NaN, so histories compare equal).
        by_bin[source] = {
            label: b["yaw"] if b["count"] else None for label, b in errors.by_yaw_bin().items()
        }
    model.train()
    losses = {name: value / count for name, value in sums.items()}
    return ValidationResult(losses, nme, yaw_mae, by_bin)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Loss curves (train and validation, per task) and validation accuracy, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in TASKS:
        train_values = [h["train"].get(name, math.nan) for h in history]
        axes[0].plot(epochs, train_values, label=f"train {name}")
        axes[0].plot(epochs, [h["val"][name] for h in history], "--", label=f"val {name}")
    axes[0].set_yscale("log")
    axes[0].set_title("per-task losses (unweighted)")
    axes[0].legend(fontsize=7)
    for source in history[-1]["val_nme"]:
        axes[1].plot(epochs, [100 * h["val_nme"][source] for h in history], label=source)
        axes[2].plot(epochs, [h["val_yaw_mae"][source] for h in history], label=source)
    axes[1].set_title("validation NME (%; 300-W inter-ocular, AFLW box)")
    axes[2].set_title("validation yaw MAE (deg)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[1].legend()
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def anneal_factor(config: TrainConfig, epoch: int) -> float | None:
    """Share of the annealing's starting rate for ``epoch``; ``None`` before the annealing.

    The last ``anneal_epochs`` epochs follow a cosine from the rate the plateau rule had
    reached down towards zero: a fixed budget ends annealed, whatever the plateaus did before.
    """
    first = config.epochs - config.anneal_epochs
    if config.anneal_epochs <= 0 or epoch < first:
        return None
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - first + 1) / (config.anneal_epochs + 1)))


def _new_optimiser(
    model: MNN, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=0.5, patience=config.plateau_patience
    )
    return optimiser, scheduler


def train(
    config: TrainConfig, out_dir: Path, data_root: Path = DEFAULT_DATA, cache_dir: Path = CACHE_DIR
) -> Path:
    """Train (or resume) a run in ``out_dir``; return the path of the final checkpoint.

    The time budget counts across resumptions, so an interrupted run still ends when it was
    planned to. Decoded faces are cached in ``cache_dir``.
    """
    torch.set_num_threads(config.threads)
    # Crops are tiny: OpenCV's thread pool would only fight torch's threads for the cores.
    cv2.setNumThreads(1)
    seed_everything(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.pt"
    resumed = None
    if last.is_file():
        resumed = torch.load(last, weights_only=False)
    data = prepare_data(
        config, data_root, cache_dir, None if resumed is None else resumed["mean_face_mm"]
    )
    mean_face_t = torch.as_tensor(data.mean_face_mm[:68] / 1000.0, dtype=torch.float32)
    val_batches = validation_batches(data, config)

    model = MNN(config.model)
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "elapsed_s": 0.0,
        "history": [],
        "pretraining": config.schedule == "pre+sym",
    }
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        state = resumed["state"]
        print(
            f"resuming {out_dir} at epoch {state['epoch']}"
            f" ({state['elapsed_s'] / 60:.1f} min trained)",
            flush=True,
        )
    else:
        mean, std = pose_statistics(data, config)
        model.set_pose_statistics(torch.as_tensor(mean), torch.as_tensor(std))
    # The configuration in force; a resumed run may have changed its schedule (epochs, annealing).
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    optimiser, scheduler = _new_optimiser(model, config)
    if resumed is not None:
        optimiser.load_state_dict(resumed["optimiser"])
        scheduler.load_state_dict(resumed["scheduler"])
    floor = heatmap_entropy_floor(
        config.model.input_size, config.model.heatmap_size, config.heatmap_sigma
    )
    print(
        "faces (train / val): "
        + ", ".join(
            f"{t.source} {len(t)} / {len(v)}" for t, v in zip(data.train, data.val, strict=True)
        )
        + f"; heatmap loss floor {floor:.3f}",
        flush=True,
    )

    model.train()
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        if config.time_budget_min and state["elapsed_s"] > config.time_budget_min * 60:
            print(
                f"time budget of {config.time_budget_min} min reached at epoch {epoch}", flush=True
            )
            break
        converged = optimiser.param_groups[0]["lr"] < config.min_learning_rate
        annealed = anneal_factor(config, epoch)
        if state["pretraining"] and (
            converged or config.pretraining_done(epoch, state["elapsed_s"])
        ):
            print(
                f"heatmap pre-training done after {epoch} epochs; training all tasks", flush=True
            )
            state["pretraining"] = False
            state["sym_start_epoch"] = epoch
            optimiser, scheduler = _new_optimiser(model, config)
        elif converged and annealed is None:
            print(f"learning rate below {config.min_learning_rate:g}: converged at epoch {epoch}")
            break
        if annealed is not None:
            start = state.setdefault("anneal_from_lr", optimiser.param_groups[0]["lr"])
            for group in optimiser.param_groups:
                group["lr"] = start * annealed
        weights = config.phase_weights(state["pretraining"])
        started = time.monotonic()
        # One random stream per epoch: a resumed run draws exactly what an uninterrupted one would.
        rng = np.random.default_rng([config.seed, epoch])
        draws = draw_epoch(
            data.train, data.weights, config.yaw_bin_edges_deg, config.samples_per_epoch, rng
        )
        sums: dict[str, float] = {}
        batches = range(0, len(draws) - config.batch_size + 1, config.batch_size)
        progress = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            leave=False,
            mininterval=10,
        )
        for start in progress:
            samples = make_samples(
                data.train, draws[start : start + config.batch_size], config, config.augment, rng
            )
            batch = collate(samples, config.normalisation)
            loss, values = multitask_loss(
                model(batch["image"]),
                batch,
                weights,
                mean_face_t,
                model.pose_std,
                config.heatmap_sigma,
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            state["step"] += 1
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            progress.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        seconds = time.monotonic() - started
        result = validate(model, val_batches, config, mean_face_t)
        state["elapsed_s"] += time.monotonic() - started
        phase_total = sum(getattr(weights, name) * value for name, value in result.losses.items())
        if annealed is None:  # the plateau rule no longer acts once the cosine has begun
            scheduler.step(phase_total)
        record = {
            "epoch": epoch + 1,
            "train": {name: value / max(1, len(batches)) for name, value in sums.items()},
            "val": result.losses,
            "val_total": phase_total,
            "val_nme": result.nme,
            "val_yaw_mae": result.yaw_mae,
            "val_yaw_mae_by_bin": result.yaw_mae_by_bin,
            "lr": optimiser.param_groups[0]["lr"],
            "images_per_s": len(batches) * config.batch_size / seconds,
        }
        state["history"].append(record)
        state["epoch"] = epoch + 1
        print(
            f"epoch {epoch + 1}: val "
            + " ".join(f"{k}={v:.4f}" for k, v in result.losses.items())
            + " | NME "
            + " ".join(f"{k} {100 * v:.2f}%" for k, v in result.nme.items())
            + " | yaw MAE "
            + " ".join(f"{k} {v:.2f}" for k, v in result.yaw_mae.items())
            + f" | lr {record['lr']:.2e} | {record['images_per_s']:.1f} img/s",
            flush=True,
        )
        save_checkpoint(
            last,
            Checkpoint(
                model=model.state_dict(),
                config=config,
                mean_face_mm=data.mean_face_mm,
                split=data.split_names(),
                state=state,
                optimiser=optimiser.state_dict(),
                scheduler=scheduler.state_dict(),
            ),
        )
        plot_history(state["history"], out_dir / "loss_curves.png")
    return last


def main(argv: list[str] | None = None) -> int:
    """Command line: train, then (unless ``--no-export``) export, fit the OR and evaluate."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="run configuration (JSON)")
    parser.add_argument(
        "--out", type=Path, required=True, help="run folder (checkpoints, logs, plots)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="data root holding the config's 300-W and AFLW folders",
    )
    parser.add_argument(
        "--cache", type=Path, default=CACHE_DIR, help="folder for the decoded-face cache"
    )
    parser.add_argument(
        "--export-to", type=Path, help="folder for the ONNX models + manifest (default OUT/export)"
    )
    parser.add_argument("--no-export", action="store_true", help="stop after training")
    parser.add_argument(
        "--no-or", action="store_true", help="export and evaluate the MNN without fitting the OR"
    )
    parser.add_argument(
        "--time-budget-min", type=float, help="override the config's training time budget"
    )
    parser.add_argument("--epochs", type=int, help="override the config's epoch count")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.time_budget_min is not None:
        config = replace(config, time_budget_min=args.time_budget_min)
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    checkpoint = train(config, args.out, args.data, args.cache)
    if args.no_export:
        return 0
    from headpose_training.calibration import calibrate_presence
    from headpose_training.evaluate import evaluate_export
    from headpose_training.export import (
        add_files_to_manifest,
        export_checkpoint,
        set_manifest_fields,
    )
    from headpose_training.occlusion_regressor_training import fit_for_model
    from headpose_training.quantize import quantize_export

    export_dir = args.export_to or args.out / "export"
    manifest_path = export_checkpoint(checkpoint, export_dir)
    # The int8 copies the CPU runs by default; the OR and the presence thresholds below are
    # fitted on the float network, which the int8 files reproduce within quantize.TOLERANCE.
    quantize_export(manifest_path, checkpoint, args.data)
    if not args.no_or:
        # The OR learns from the exported MNN's own outputs, so it is fitted after export and
        # registered in the manifest before the evaluation runs both passes (MNN, MNN+OR).
        fit_for_model(export_dir, checkpoint, args.data, args.out / "or", register=True)
    # The presence thresholds depend on the final heatmaps: measured on validation faces.
    presence = calibrate_presence(export_dir, checkpoint, args.data)
    (args.out / "presence.json").write_text(json.dumps(presence, indent=2))
    set_manifest_fields(
        manifest_path, {"face_presence": {k: presence[k] for k in ("min", "clear")}}
    )
    add_files_to_manifest(manifest_path, {}, {"face_presence": presence})
    evaluate_export(
        manifest_path, checkpoint, args.data, args.out / "eval", record_in_manifest=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
