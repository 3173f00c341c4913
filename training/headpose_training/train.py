"""``headpose-train``: train the MNN (Pre+Sym schedule), export it, fit the OR and evaluate.

Read top to bottom: the run configuration, batch assembly, one epoch, validation, the loop with
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from headpose_ros.core.crop import Normalisation, to_network_input
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.metrics import landmark_normaliser, nme_per_face, pose_errors
from headpose_training.augment import AugmentConfig, TrainingSample, make_sample
from headpose_training.data import PatchSet, build_patch_set, estimate_mean_face, split_train_val
from headpose_training.losses import TASKS, LossWeights, heatmap_entropy_floor, multitask_loss
from headpose_training.model import MNN, MNNConfig
from headpose_training.occlusion_regressor_training import OrFitConfig, fit_for_model

__all__ = ["TrainConfig", "load_config", "main", "train"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "300w_subset"
CACHE_DIR = REPO_ROOT / "training" / "cache"
SCHEDULES = ("pre+sym", "sym", "pose")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; stored verbatim in every checkpoint and the manifest."""

    name: str = "compact"
    model: MNNConfig = field(default_factory=MNNConfig)
    schedule: str = "pre+sym"
    train_splits: tuple[str, ...] = ("helen_train", "afw")
    val_fraction: float = 0.1
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    plateau_patience: int = 5
    pretrain_epochs: int = 20
    epochs: int = 100
    time_budget_min: float = 0.0
    pretrain_fraction: float = 0.3
    min_learning_rate: float = 1e-5
    heatmap_sigma: float = 1.0
    weights: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int = 2
    normalisation: Normalisation = field(default_factory=Normalisation)
    occlusion_regressor: OrFitConfig = field(default_factory=OrFitConfig)

    def __post_init__(self) -> None:
        """Fail on a misspelt schedule before hours of training, not after."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "pre+sym" and not (
            0 < self.pretrain_epochs < self.epochs and 0 < self.pretrain_fraction < 1
        ):
            raise ValueError(
                "pre+sym needs 0 < pretrain_epochs < epochs and 0 < pretrain_fraction < 1"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from JSON, converting nested tables; unknown keys are an error (typos)."""
        fields = dict(data)
        fields["model"] = MNNConfig.from_dict(fields.get("model", {}))
        fields["weights"] = LossWeights(**fields.get("weights", {}))
        augment = dict(fields.get("augment", {}))
        for key in ("hsv_range", "occluder_size"):
            if key in augment:
                augment[key] = tuple(augment[key])
        fields["augment"] = AugmentConfig(**augment)
        norm = dict(fields.get("normalisation", {}))
        for key in ("mean", "std"):
            if key in norm:
                norm[key] = tuple(norm[key])
        fields["normalisation"] = Normalisation(**norm)
        fields["occlusion_regressor"] = OrFitConfig(**fields.get("occlusion_regressor", {}))
        fields["train_splits"] = tuple(fields.get("train_splits", cls.train_splits))
        return cls(**fields)

    def phase_weights(self, pretraining: bool) -> LossWeights:
        """Loss weights in force in the current phase of the configured schedule."""
        if self.schedule == "pose":
            return LossWeights(
                pose_ed=self.weights.pose_ed, pose_ae=0.0, heatmaps=0.0, visibility=0.0
            )
        if pretraining:
            return LossWeights(
                pose_ed=0.0, pose_ae=0.0, heatmaps=self.weights.heatmaps, visibility=0.0
            )
        return self.weights

    def pretraining_done(self, epoch: int, elapsed_s: float) -> bool:
        """Whether heatmap pre-training has had its share (epochs, or of the time budget).

        With a time budget the share is ``pretrain_fraction`` of it, so a slower machine
        shortens both phases in proportion instead of spending the whole budget pre-training.
        """
        if epoch >= self.pretrain_epochs:
            return True
        return (
            bool(self.time_budget_min)
            and elapsed_s >= self.pretrain_fraction * self.time_budget_min * 60
        )


def load_config(path: Path | str) -> TrainConfig:
    """Read a JSON run configuration (see ``training/configs``)."""
    return TrainConfig.from_dict(json.loads(Path(path).read_text()))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run is repeatable on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collate(
    samples: list[TrainingSample], normalisation: Normalisation
) -> dict[str, torch.Tensor]:
    """Stack augmented samples into the tensors the network and losses take."""
    crops = np.stack([s.crop for s in samples])
    return {
        "image": torch.from_numpy(to_network_input(crops, normalisation)),
        "landmarks": torch.from_numpy(np.stack([s.landmarks for s in samples]).astype(np.float32)),
        "mask": torch.from_numpy(np.stack([s.mask for s in samples]).astype(np.float32)),
        "visibility": torch.from_numpy(
            np.stack([s.visibility for s in samples]).astype(np.float32)
        ),
        "pose": torch.from_numpy(np.stack([s.pose for s in samples]).astype(np.float32)),
    }


def make_samples(
    patches: PatchSet,
    indices: np.ndarray,
    config: TrainConfig,
    mean_face_m: np.ndarray,
    augment: AugmentConfig,
    rng: np.random.Generator,
) -> list[TrainingSample]:
    """Cut one sample per index with the given augmentation."""
    size = config.model.input_size
    return [
        make_sample(
            patches.patches[i],
            patches.landmarks[i],
            patches.mask[i],
            patches.box,
            size,
            mean_face_m,
            augment,
            rng,
        )
        for i in indices
    ]


def pose_statistics(
    patches: PatchSet, config: TrainConfig, mean_face_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the pose labels under augmentation, for standardising the pose heads."""
    rng = np.random.default_rng(config.seed)
    samples = make_samples(
        patches, np.arange(len(patches.names)), config, mean_face_m, config.augment, rng
    )
    poses = np.stack([s.pose for s in samples])
    return poses.mean(axis=0), poses.std(axis=0)


@dataclass
class ValidationResult:
    """Validation losses per task and the accuracy figures logged each epoch."""

    losses: dict[str, float]
    nme_io: float
    pose_mae: float


@torch.no_grad()
def validate(
    model: MNN, batch: dict[str, torch.Tensor], config: TrainConfig, mean_face: torch.Tensor
) -> ValidationResult:
    """Losses of every task (whether trained yet or not) and NME/MAE on the fixed val crops."""
    model.eval()
    terms: dict[str, list[float]] = {name: [] for name in TASKS}
    heatmaps, poses = [], []
    for start in range(0, len(batch["image"]), 64):
        part = {key: value[start : start + 64] for key, value in batch.items()}
        output = model(part["image"])
        _, values = multitask_loss(
            output, part, LossWeights(), mean_face, model.pose_std, config.heatmap_sigma
        )
        for name, value in values.items():
            terms[name].append(value * len(part["image"]))
        heatmaps.append(
            torch.softmax(output.heatmap_logits.flatten(2), 2)
            .view_as(output.heatmap_logits)
            .numpy()
        )
        poses.append(output.pose_ed.numpy())
    count = len(batch["image"])
    losses = {name: sum(values) / count for name, values in terms.items()}
    predicted, _ = decode_heatmaps(np.concatenate(heatmaps), config.model.input_size)
    gt = batch["landmarks"].numpy().astype(np.float64)
    nme = nme_per_face(
        predicted, gt, batch["mask"].numpy(), landmark_normaliser(gt, "interocular")
    )
    mae = pose_errors(np.concatenate(poses), batch["pose"].numpy()).mae["mean"]
    model.train()
    return ValidationResult(losses, float(np.nanmean(nme)), mae)


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
    axes[1].plot(epochs, [100 * h["val_nme_io"] for h in history])
    axes[1].set_title("validation NME (% inter-ocular)")
    axes[2].plot(epochs, [h["val_pose_mae"] for h in history])
    axes[2].set_title("validation head-pose MAE (deg)")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _new_optimiser(
    model: MNN, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=0.5, patience=config.plateau_patience
    )
    return optimiser, scheduler


def train(
    config: TrainConfig, out_dir: Path, data_dir: Path = DEFAULT_DATA, cache_dir: Path = CACHE_DIR
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
    patches = build_patch_set(
        [data_dir / split for split in config.train_splits], config.model.input_size, cache_dir
    )
    train_idx, val_idx = split_train_val(len(patches.names), config.val_fraction, config.seed)
    train_set, val_set = patches.subset(train_idx), patches.subset(val_idx)
    mean_face_mm = estimate_mean_face(train_set.landmarks[train_set.mask.all(axis=1)])
    mean_face_m = mean_face_mm / 1000.0
    mean_face_t = torch.as_tensor(mean_face_m, dtype=torch.float32)
    val_batch = collate(
        make_samples(
            val_set,
            np.arange(len(val_set.names)),
            config,
            mean_face_m,
            AugmentConfig(enabled=False),
            np.random.default_rng(0),
        ),
        config.normalisation,
    )

    model = MNN(config.model)
    last = out_dir / "last.pt"
    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "elapsed_s": 0.0,
        "history": [],
        "pretraining": config.schedule == "pre+sym",
    }
    if last.is_file():
        checkpoint = torch.load(last, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        state = checkpoint["state"]
        print(
            f"resuming {out_dir} at epoch {state['epoch']}"
            f" ({state['elapsed_s'] / 60:.1f} min trained)",
            flush=True,
        )
    else:
        mean, std = pose_statistics(train_set, config, mean_face_m)
        model.set_pose_statistics(torch.as_tensor(mean), torch.as_tensor(std))
        (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    optimiser, scheduler = _new_optimiser(model, config)
    if last.is_file():
        optimiser.load_state_dict(checkpoint["optimiser"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    floor = heatmap_entropy_floor(
        config.model.input_size, config.model.heatmap_size, config.heatmap_sigma
    )
    print(
        f"{len(train_set.names)} train / {len(val_set.names)} val faces;"
        f" heatmap loss floor {floor:.3f}",
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
        if state["pretraining"] and (
            converged or config.pretraining_done(epoch, state["elapsed_s"])
        ):
            print(
                f"heatmap pre-training done after {epoch} epochs; training all tasks", flush=True
            )
            state["pretraining"] = False
            state["sym_start_epoch"] = epoch
            optimiser, scheduler = _new_optimiser(model, config)
        elif converged:
            print(f"learning rate below {config.min_learning_rate:g}: converged at epoch {epoch}")
            break
        weights = config.phase_weights(state["pretraining"])
        started = time.monotonic()
        # One random stream per epoch: a resumed run draws exactly what an uninterrupted one would.
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(train_set.names))
        sums: dict[str, float] = {}
        batches = range(0, len(order) - config.batch_size + 1, config.batch_size)
        progress = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            leave=False,
            mininterval=5,
        )
        for start in progress:
            batch = collate(
                make_samples(
                    train_set,
                    order[start : start + config.batch_size],
                    config,
                    mean_face_m,
                    config.augment,
                    rng,
                ),
                config.normalisation,
            )
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
        result = validate(model, val_batch, config, mean_face_t)
        state["elapsed_s"] += time.monotonic() - started
        phase_total = sum(getattr(weights, name) * value for name, value in result.losses.items())
        scheduler.step(phase_total)
        images = len(batches) * config.batch_size
        record = {
            "epoch": epoch + 1,
            "train": {name: value / max(1, len(batches)) for name, value in sums.items()},
            "val": result.losses,
            "val_total": phase_total,
            "val_nme_io": result.nme_io,
            "val_pose_mae": result.pose_mae,
            "lr": optimiser.param_groups[0]["lr"],
            "images_per_s": images / seconds,
        }
        state["history"].append(record)
        state["epoch"] = epoch + 1
        print(
            f"epoch {epoch + 1}: val "
            + " ".join(f"{k}={v:.4f}" for k, v in result.losses.items())
            + f" | NME_io {100 * result.nme_io:.2f}% pose MAE {result.pose_mae:.2f} deg"
            + f" | lr {record['lr']:.2e} | {record['images_per_s']:.1f} img/s",
            flush=True,
        )
        checkpoint = {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "scheduler": scheduler.state_dict(),
            "state": state,
            "config": config.to_dict(),
            "mean_face_mm": mean_face_mm,
            "split": {"train": train_set.names, "val": val_set.names},
        }
        torch.save(checkpoint, out_dir / "last.tmp")
        (out_dir / "last.tmp").replace(last)
        plot_history(state["history"], out_dir / "loss_curves.png")
    return last


def load_checkpoint(path: Path) -> tuple[MNN, TrainConfig, dict[str, Any]]:
    """Rebuild the network a checkpoint was trained with (the config travels inside it)."""
    checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    config = TrainConfig.from_dict(checkpoint["config"])
    model = MNN(config.model)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, config, checkpoint


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
        "--data", type=Path, default=DEFAULT_DATA, help="300-W folder with the splits"
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
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.time_budget_min is not None:
        config = replace(config, time_budget_min=args.time_budget_min)
    checkpoint = train(config, args.out, args.data, args.cache)
    if args.no_export:
        return 0
    from headpose_training.evaluate import evaluate_export
    from headpose_training.export import export_checkpoint

    export_dir = args.export_to or args.out / "export"
    manifest_path = export_checkpoint(checkpoint, export_dir)
    if not args.no_or:
        # The OR learns from the exported MNN's own outputs, so it is fitted after export and
        # registered in the manifest before the evaluation runs both passes (MNN, MNN+OR).
        fit_for_model(
            export_dir,
            args.data,
            args.out / "or",
            config.occlusion_regressor,
            config.val_fraction,
            config.seed,
            config.train_splits,
            register=True,
        )
    evaluate_export(
        manifest_path, args.data / "helen_test", args.out / "eval", record_in_manifest=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
