"""The run configuration: everything a training run depends on, stored in every checkpoint.

One frozen dataclass, read from JSON (``training/configs``) with unknown keys rejected, so a
misspelt setting fails before hours of training instead of being silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headpose_ros.core.crop import BOX_MARGIN, Normalisation
from headpose_training.augment import AugmentConfig
from headpose_training.losses import LossWeights
from headpose_training.model import MNNConfig
from headpose_training.or_fit import OrFitConfig

__all__ = ["CACHE_DIR", "DEFAULT_DATA", "SCHEDULES", "TrainConfig", "load_config"]

SCHEDULES = ("pre+sym", "sym", "pose")
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: The development data root (300-W subset and AFLW crops), beside the repository.
DEFAULT_DATA = _REPO_ROOT.parent / "shared" / "data"
#: Decoded faces, mean faces and pose labels, reused across runs (git-ignored).
CACHE_DIR = _REPO_ROOT / "training" / "cache"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; stored verbatim in every checkpoint and the manifest.

    Data: ``data_300w`` and ``aflw_folder`` name folders under the command's ``--data`` root
    (an empty ``aflw_folder`` trains on 300-W alone); ``train_splits`` are the 300-W folders
    trained on (``helen_test`` never is). Each epoch draws ``samples_per_epoch`` faces, the
    sources in proportion ``source_weights`` (300-W, AFLW), AFLW equally from the |yaw| bins
    cut at ``yaw_bin_edges_deg``. ``val_fraction`` of each source is held out, by photograph.
    ``crop_margin`` is the paper's crop rule; the manifest carries it to inference.

    Schedule (paper 4.3.2): "pre+sym" trains heatmaps alone for ``pretrain_epochs`` (or
    ``pretrain_fraction`` of a time budget), then all four tasks of loss (5); "sym" all tasks
    from scratch; "pose" loss (1) alone (the single-task baseline). The learning rate is
    halved on validation plateaus; the last ``anneal_epochs`` epochs then follow a cosine from
    the rate reached down towards zero, so a fixed epoch budget always ends annealed.
    """

    name: str = "compact"
    model: MNNConfig = field(default_factory=MNNConfig)
    schedule: str = "pre+sym"
    data_300w: str = "300w_subset"
    train_splits: tuple[str, ...] = ("helen_train", "afw", "lfpw_train")
    aflw_folder: str = "aflw_crops"
    source_weights: tuple[float, float] = (0.4, 0.6)
    yaw_bin_edges_deg: tuple[float, ...] = (30.0, 60.0)
    samples_per_epoch: int = 8000
    val_fraction: float = 0.1
    crop_margin: float = BOX_MARGIN
    mean_face_iterations: int = 4
    mean_face_aflw_faces: int = 4000
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    plateau_patience: int = 5
    pretrain_epochs: int = 20
    epochs: int = 100
    time_budget_min: float = 0.0
    pretrain_fraction: float = 0.3
    min_learning_rate: float = 1e-5
    anneal_epochs: int = 0
    heatmap_sigma: float = 1.0
    weights: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int = 2
    normalisation: Normalisation = field(default_factory=Normalisation)
    occlusion_regressor: OrFitConfig = field(default_factory=OrFitConfig)

    def __post_init__(self) -> None:
        """Fail on a misspelt schedule or an impossible mix before hours of training."""
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "pre+sym" and not (
            0 < self.pretrain_epochs < self.epochs and 0 < self.pretrain_fraction < 1
        ):
            raise ValueError(
                "pre+sym needs 0 < pretrain_epochs < epochs and 0 < pretrain_fraction < 1"
            )
        first_annealed = self.epochs - self.anneal_epochs
        if self.anneal_epochs < 0 or first_annealed <= (
            self.pretrain_epochs if self.schedule == "pre+sym" else 0
        ):
            raise ValueError("anneal_epochs must be >= 0 and leave the epochs before it")
        if len(self.source_weights) != 2 or min(self.source_weights) < 0:
            raise ValueError("source_weights needs two non-negative shares (300-W, AFLW)")

    @property
    def uses_aflw(self) -> bool:
        """Whether AFLW is part of the training data."""
        return bool(self.aflw_folder) and self.source_weights[1] > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from JSON, converting nested tables; unknown keys are an error (typos)."""
        fields = dict(data)
        fields["model"] = MNNConfig.from_dict(fields.get("model", {}))
        fields["weights"] = LossWeights(**fields.get("weights", {}))
        fields["augment"] = AugmentConfig(**_tuples(fields.get("augment", {})))
        fields["normalisation"] = Normalisation(**_tuples(fields.get("normalisation", {})))
        fields["occlusion_regressor"] = OrFitConfig(**fields.get("occlusion_regressor", {}))
        for key in ("train_splits", "source_weights", "yaw_bin_edges_deg"):
            if key in fields:
                fields[key] = tuple(fields[key])
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


def _tuples(table: dict[str, Any]) -> dict[str, Any]:
    """JSON lists -> tuples, as the frozen dataclasses' fields expect."""
    return {
        key: tuple(value) if isinstance(value, list) else value for key, value in table.items()
    }


def load_config(path: Path | str) -> TrainConfig:
    """Read a JSON run configuration (see ``training/configs``)."""
    return TrainConfig.from_dict(json.loads(Path(path).read_text()))
