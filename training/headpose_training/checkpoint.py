"""Training checkpoints: one schema, written and read only here.

A checkpoint is everything needed to resume a run bit-identically or to export it: the
network's weights, the optimiser and scheduler states, the loop state (epoch, history, phase),
the run configuration it was trained with (as nanoGPT does, so a checkpoint explains itself),
the mean 3D face its pose labels came from, and the train/validation split by face name per
source, so later steps (the OR fit, the evaluation) use the same held-out faces instead of
recomputing the split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headpose_training.config import TrainConfig
from headpose_training.model import MNN

__all__ = ["FORMAT_VERSION", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 2


@dataclass
class Checkpoint:
    """The stored fields.

    ``split`` maps a source ("300w", "aflw") to ``{"train": names, "val": names}``.
    """

    model: dict[str, torch.Tensor]
    config: TrainConfig
    mean_face_mm: np.ndarray
    split: dict[str, dict[str, list[str]]]
    state: dict[str, Any] = field(default_factory=dict)
    optimiser: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically (a crash while saving leaves the previous checkpoint intact)."""
    data = {
        "format": FORMAT_VERSION,
        "model": checkpoint.model,
        "config": checkpoint.config.to_dict(),
        "mean_face_mm": np.asarray(checkpoint.mean_face_mm),
        "split": checkpoint.split,
        "state": checkpoint.state,
        "optimiser": checkpoint.optimiser,
        "scheduler": checkpoint.scheduler,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(data, temporary)
    temporary.replace(path)


def load_checkpoint(path: Path) -> tuple[MNN, Checkpoint]:
    """Read a checkpoint and rebuild its network (eval mode) from the config inside it."""
    data = torch.load(path, weights_only=False, map_location="cpu")
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {data.get('format')!r}, this code reads {FORMAT_VERSION}"
        )
    checkpoint = Checkpoint(
        model=data["model"],
        config=TrainConfig.from_dict(data["config"]),
        mean_face_mm=np.asarray(data["mean_face_mm"]),
        split=data["split"],
        state=data["state"],
        optimiser=data["optimiser"],
        scheduler=data["scheduler"],
    )
    model = MNN(checkpoint.config.model)
    model.load_state_dict(checkpoint.model)
    model.eval()
    return model, checkpoint
