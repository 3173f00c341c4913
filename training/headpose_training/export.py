"""``headpose-export``: ONNX models and the manifest the inference core loads.

Two graphs come out of one checkpoint: the full MNN (heatmaps, p^ED, p^AE, visibility) and the
encoder alone (p^ED, p^AE: the paper's fast head-pose mode). Output names and the dynamic batch
dimension follow :class:`headpose_ros.core.manifest.OutputNames`; softmax and sigmoid are part
of the graph so the ONNX outputs are the contract's probabilities. Every export is checked
against torch on the same input before the manifest is written, so a model that ships is a
model that was verified.

The OR artefact is trained elsewhere; ``--or`` adds it (role "or") to a fresh or existing
manifest so the shipped manifest can be regenerated once it exists.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from headpose_ros.core.landmarks import IBUG68
from headpose_ros.core.manifest import (
    ModelFile,
    ModelManifest,
    OutputNames,
    load_manifest,
    sha256_of,
)
from headpose_training.checkpoint import load_checkpoint
from headpose_training.model import MNN

__all__ = [
    "LICENCE",
    "EncoderGraph",
    "MNNGraph",
    "add_files_to_manifest",
    "check_parity",
    "export_checkpoint",
    "export_model",
    "main",
]

LICENCE = (
    "Research and non-commercial use only. These weights were trained on the 300-W data set "
    "(HELEN, AFW and LFPW images with iBUG 300-W annotations) and on AFLW (Annotated Facial "
    "Landmarks in the Wild) face crops, whose images and annotations are licensed for research "
    "and non-commercial purposes only; the model inherits that restriction. Do not use it in a "
    "commercial product."
)
OPSET = 17
PARITY_TOLERANCE = {"heatmaps": 1e-4, "pose_ed": 1e-2, "pose_ae": 1e-2, "visibility": 1e-4}


class MNNGraph(nn.Module):
    """The full network with the contract's output activations and names' order."""

    def __init__(self, model: MNN) -> None:
        """Wrap a trained (eval-mode) MNN."""
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(heatmaps, pose_ed, pose_ae, visibility), as in paper-notes.md's output order."""
        out = self.model(image)
        logits = out.heatmap_logits
        heatmaps = torch.softmax(logits.flatten(2), dim=2).reshape(logits.shape)
        return heatmaps, out.pose_ed, out.pose_ae, torch.sigmoid(out.visibility_logits)


class EncoderGraph(nn.Module):
    """Encoder and pose heads only: no decoder cost when only head pose is wanted."""

    def __init__(self, model: MNN) -> None:
        """Wrap a trained (eval-mode) MNN."""
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pose_ed, pose_ae)."""
        _, pose_ed, pose_ae = self.model.encode(image)
        return pose_ed, pose_ae


def _output_names(graph: nn.Module) -> list[str]:
    names = OutputNames()
    if isinstance(graph, EncoderGraph):
        return [names.pose_ed, names.pose_ae]
    return [names.heatmaps, names.pose_ed, names.pose_ae, names.visibility]


def export_model(graph: nn.Module, size: int, path: Path) -> None:
    """Write ``graph`` as ONNX with a dynamic batch dimension named "batch"."""
    output_names = _output_names(graph)
    axes = {name: {0: "batch"} for name in [OutputNames().image, *output_names]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            graph.eval(),
            (torch.zeros(1, 3, size, size),),
            str(path),
            input_names=[OutputNames().image],
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def check_parity(
    graph: nn.Module, path: Path, size: int, batch: int = 3, seed: int = 0
) -> dict[str, float]:
    """Run torch and onnxruntime on the same random batch; raise if any output differs.

    Returns the largest absolute difference per output, which the manifest records. Pose
    tolerances are in degrees/metres; the probabilities' in absolute probability.
    """
    image = torch.from_numpy(
        np.random.default_rng(seed).random((batch, 3, size, size), dtype=np.float32)
    )
    with torch.no_grad():
        expected = [t.numpy() for t in graph.eval()(image)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {OutputNames().image: image.numpy()})
    differences = {}
    for name, want, got in zip(_output_names(graph), expected, actual, strict=True):
        if want.shape != got.shape:
            raise AssertionError(
                f"{path.name}:{name}: onnxruntime shape {got.shape} != torch {want.shape}"
            )
        differences[name] = float(np.max(np.abs(want - got)))
        if differences[name] > PARITY_TOLERANCE[name]:
            raise AssertionError(
                f"{path.name}:{name}: onnxruntime differs from torch by {differences[name]:.3g}"
            )
    return differences


def add_files_to_manifest(
    manifest_path: Path, files: dict[str, Path], training_update: dict[str, Any] | None = None
) -> ModelManifest:
    """Add or replace artefacts (e.g. the OR's ``or.npz``) and training notes in a manifest.

    Files are stored relative to the manifest's folder with fresh hashes, so the manifest can
    be regenerated whenever an artefact changes.
    """
    data = json.loads(manifest_path.read_text())
    for role, path in files.items():
        relative = Path(path).resolve().relative_to(manifest_path.parent.resolve())
        data["files"][role] = {"path": str(relative), "sha256": sha256_of(Path(path))}
    if training_update:
        data["training"] = {**data.get("training", {}), **training_update}
    manifest = ModelManifest.from_dict(data)
    manifest_path.write_text(manifest.to_json() + "\n")
    load_manifest(manifest_path)  # re-read with hash checks: what we wrote is what loads
    return manifest


def set_manifest_fields(manifest_path: Path, fields: dict[str, Any]) -> ModelManifest:
    """Replace top-level manifest fields (e.g. ``face_presence``) and re-validate the file."""
    data = json.loads(manifest_path.read_text())
    data.update(fields)
    manifest = ModelManifest.from_dict(data)
    manifest_path.write_text(manifest.to_json() + "\n")
    load_manifest(manifest_path)
    return manifest


def export_checkpoint(
    checkpoint_path: Path, out_dir: Path, or_artefact: Path | None = None, name: str | None = None
) -> Path:
    """Export a training checkpoint to ``out_dir`` (mnn.onnx, encoder.onnx, manifest.json).

    ``or_artefact`` (a file inside ``out_dir``) is listed with role "or" when given.
    """
    model, checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.config
    size = config.model.input_size
    out_dir.mkdir(parents=True, exist_ok=True)
    parity = {}
    files = {}
    for role, graph in (("mnn", MNNGraph(model)), ("encoder", EncoderGraph(model))):
        path = out_dir / f"{role}.onnx"
        export_model(graph, size, path)
        parity[role] = check_parity(graph, path, size)
        files[role] = ModelFile(path.name, sha256_of(path))
    history = checkpoint.state.get("history", [])
    training = {
        "config": config.to_dict(),
        "data": {
            "sources": {
                "300w": "300-W subset (HELEN train, AFW, LFPW train) with iBUG 68-point "
                "annotations",
                "aflw": "AFLW face crops (yaw label, 21 points with visibility, mapped onto "
                "iBUG-68)"
                if config.uses_aflw
                else "not used",
            },
            "train_splits": list(config.train_splits),
            "faces": {
                source: {side: len(names) for side, names in sides.items()}
                for source, sides in checkpoint.split.items()
            },
            "held_out_test": "helen_test (never used for training or tuning)",
            "licence": "research and non-commercial use only (300-W and AFLW)",
        },
        "mean_face": "rigid (Tomasi-Kanade) factorisation of the 300-W training shapes, depth "
        "refined with AFLW's yaw labels (alternating PnP and triangulation), symmetrised, "
        "scaled to an outer-eye-corner distance of 89 mm (Farkas 1994)",
        "pose_labels": "ray-relative angles in the crop camera; 300-W: PnP (SQPnP + LM) of the "
        "68 landmarks against the mean face; AFLW: its own yaw label, pitch, roll and "
        "translation by PnP of the visible points with that yaw fixed",
        "epochs": checkpoint.state.get("epoch", 0),
        "training_time_s": round(checkpoint.state.get("elapsed_s", 0.0), 1),
        "final_validation": history[-1] if history else {},
        "parameters": model.count_parameters(),
        "onnx_parity_max_abs_diff": parity,
    }
    manifest = ModelManifest(
        name=name or f"mnn-{config.name}",
        input_size=size,
        heatmap_size=config.model.heatmap_size,
        landmark_scheme="ibug68",
        normalisation=config.normalisation,
        mean_face_mm=tuple(
            tuple(float(v) for v in row)
            for row in np.asarray(checkpoint.mean_face_mm)[: IBUG68.num_points]
        ),
        crop_margin=config.crop_margin,
        files=files,
        licence=LICENCE,
        training=training,
    )
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(manifest.to_json() + "\n")
    if or_artefact is not None:
        add_files_to_manifest(manifest_path, {"or": or_artefact})
    load_manifest(manifest_path)
    return manifest_path


def main(argv: list[str] | None = None) -> int:
    """Command line: export a checkpoint, or add the OR to a manifest."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="training checkpoint (last.pt) to export")
    source.add_argument("--manifest", type=Path, help="existing manifest to add --or to")
    parser.add_argument("--out", type=Path, help="export folder (with --checkpoint)")
    parser.add_argument(
        "--or", dest="or_artefact", type=Path, help="OR .npz inside the export folder"
    )
    args = parser.parse_args(argv)
    if args.manifest is not None:
        if args.or_artefact is None:
            parser.error("--manifest needs --or")
        add_files_to_manifest(args.manifest, {"or": args.or_artefact})
        print(f"added {args.or_artefact} to {args.manifest}")
        return 0
    if args.out is None:
        parser.error("--out is required")
    manifest = export_checkpoint(args.checkpoint, args.out, args.or_artefact)
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
