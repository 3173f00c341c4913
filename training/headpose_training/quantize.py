"""``headpose-quantize``: int8 copies of the exported networks, for onnxruntime's CPU kernels.

Why: a robot's CPU is the product's usual device, and the network is most of a face's cost.
On the 2-core development CPU the static int8 quantisation of the MNN (a crop and its mirror
image, one batch of two) takes 0.58-0.74 of the float network's time, with its validation
accuracy (the model card has the figures). The float files stay in the manifest:
GPUs run them, and ``inference.precision`` chooses (:func:`headpose_ros.core.inference.
network_role`).

How: onnxruntime's static quantisation in QDQ form, weights int8 per output channel,
activations uint8 with ranges from the min and max over calibration crops. Those are faces of
the run's training split (both sources) cut by the product's crop rule, each also mirrored as
mirror averaging runs it. The output heads stay float: the heatmap and visibility convolutions,
the pose regressors and the scaling after them, since one uint8 scale shared by angles in
degrees and translations in metres would round the translations to zero.

Every int8 file is compared with its float network on the run's validation faces, both run as
the product runs them: how far their answers are apart, and each one's own accuracy there
(AFLW yaw, 300-W and AFLW landmarks), the figures that decide whether int8 may be the CPU's
default. Both go into the manifest (``training.int8``), and a file whose mean disagreement
passes :data:`TOLERANCE` is removed rather than shipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from headpose_ros.core.crop import apply_affine, crop_affine, to_network_input
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.inference import ModelRunner, NetworkOutputs
from headpose_ros.core.manifest import INT8_SUFFIX, ModelManifest, load_manifest
from headpose_ros.core.metrics import landmark_normaliser, nme_per_face
from headpose_training.calibration import face_crops
from headpose_training.checkpoint import load_checkpoint
from headpose_training.config import DEFAULT_DATA
from headpose_training.evaluate import cpu_runner, yaw_report
from headpose_training.export import add_files_to_manifest, set_manifest_fields
from headpose_training.faces import FaceSet, label_poses
from headpose_training.occlusion_regressor_training import split_faces

__all__ = [
    "TOLERANCE",
    "agreement",
    "answers_by_precision",
    "calibration_inputs",
    "float_head_nodes",
    "main",
    "quantize_export",
    "quantize_network",
    "run_in_batches",
    "validation_accuracy",
]

_LOG = logging.getLogger(__name__)

#: Largest mean int8-versus-float difference accepted: head angles (degrees) and landmarks
#: (crop pixels, decoded from the heatmaps). The shipped model's agreement is far inside.
TOLERANCE = {"angles_deg_mean": 1.0, "landmarks_px_mean": 1.0}
#: Training faces per source whose crops (and mirror images) set the activation ranges.
CALIBRATION_FACES = 256
#: Operators quantised; the rest (reshapes, the heads' arithmetic) run in float.
_QUANTISED_OPS = ["Conv", "Relu", "Add", "Resize"]
#: Where the walk back from an output stops: the head's own weighted layer.
_HEAD_LAYERS = {"Conv", "Gemm"}


def float_head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes from each graph output back to its head's Conv or Gemm, included."""
    producer = {name: node for node in model.graph.node for name in node.output}
    kept: list[str] = []
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None:
            kept.append(node.name)
            if node.op_type in _HEAD_LAYERS:
                break
            node = producer.get(node.input[0])
    return kept


class _Crops(CalibrationDataReader):
    """Feeds the calibration inputs one crop at a time, as onnxruntime's calibrator asks."""

    def __init__(self, inputs: np.ndarray, input_name: str) -> None:
        self._items = iter(inputs)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {self._name: item[None]}


def calibration_inputs(
    split: dict[str, dict[str, FaceSet]], manifest: ModelManifest, per_source: int, seed: int
) -> np.ndarray:
    """Network inputs of ``per_source`` training faces per source, each followed by its mirror.

    ``split`` is the run's faces by source and side (:func:`split_faces`).
    """
    rng = np.random.default_rng(seed)
    crops = []
    for sides in split.values():
        train = sides["train"]
        chosen = rng.choice(len(train), min(per_source, len(train)), replace=False)
        crops.append(face_crops(train.subset(sorted(chosen.tolist())), manifest.input_size))
    inputs = to_network_input(np.concatenate(crops), manifest.normalisation)
    return np.concatenate([inputs, inputs[..., ::-1]]).astype(np.float32)


def quantize_network(
    float_path: Path, int8_path: Path, inputs: np.ndarray, input_name: str
) -> None:
    """Write the static int8 (QDQ) quantisation of ``float_path``, heads kept float."""
    float_path, int8_path = Path(float_path).resolve(), Path(int8_path).resolve()
    # onnxruntime's quantiser leaves scratch files in the working directory: keep them in ours.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        prepared = Path(scratch) / "prepared.onnx"
        # onnxruntime's symbolic shape inference cannot follow the heads' dynamic reshapes;
        # the ONNX shape inference and graph optimisation of the preprocessing still run.
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            _Crops(inputs, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=_QUANTISED_OPS,
            nodes_to_exclude=float_head_nodes(onnx.load(str(prepared))),
        )


def run_in_batches(runner: ModelRunner, inputs: np.ndarray, batch: int = 64) -> NetworkOutputs:
    """Run many network inputs ``(N, 3, S, S)`` through ``runner``, ``batch`` at a time."""
    parts = [runner.run(inputs[start : start + batch]) for start in range(0, len(inputs), batch)]

    def joined(name: str) -> np.ndarray | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else np.concatenate(values)

    names = ("pose_ed", "pose_ae", "heatmaps", "visibility")
    return NetworkOutputs(*(joined(name) for name in names))


def answers_by_precision(
    model_dir: Path, role: str, inputs: np.ndarray
) -> dict[str, NetworkOutputs]:
    """Run ``inputs`` through ``role``'s float and int8 network as the product runs them."""
    return {
        precision: run_in_batches(cpu_runner(model_dir, role, precision), inputs)
        for precision in ("float32", "int8")
    }


def agreement(
    reference: NetworkOutputs, other: NetworkOutputs, crop_size: int
) -> dict[str, float]:
    """How far two networks' answers on the same crops are apart: mean, p99 and max.

    Angles are p^ED's, in degrees; translation is p^ED's, relative; landmarks are decoded from
    the heatmaps, in pixels of the ``crop_size`` crop; visibility in probability.
    """
    translation = reference.pose_ed[:, 3:]
    moved = np.linalg.norm(translation - other.pose_ed[:, 3:], axis=1)
    apart = {
        "angles_deg": np.abs(reference.pose_ed[:, :3] - other.pose_ed[:, :3]),
        "translation_relative": moved / np.linalg.norm(translation, axis=1),
    }
    if reference.heatmaps is not None and other.heatmaps is not None:
        points = [
            decode_heatmaps(answer.heatmaps, float(crop_size))[0] for answer in (reference, other)
        ]
        apart["landmarks_px"] = np.linalg.norm(points[0] - points[1], axis=-1)
        apart["visibility"] = np.abs(reference.visibility - other.visibility)
    report: dict[str, float] = {"faces": len(reference.pose_ed)}
    for name, values in apart.items():
        report[f"{name}_mean"] = float(values.mean())
        report[f"{name}_p99"] = float(np.percentile(values, 99))
        report[f"{name}_max"] = float(values.max())
    return report


def validation_accuracy(
    outputs: NetworkOutputs, faces: dict[str, FaceSet], manifest: ModelManifest
) -> dict[str, Any]:
    """Score one precision's outputs on the validation faces (rows in ``faces``' order).

    AFLW: yaw MAE against AFLW's label per |yaw| bin and NME of the mapped points (face box);
    300-W: NME (inter-ocular). Landmarks come from the heatmaps alone (no OR), in crop pixels.
    """
    size = manifest.input_size
    report: dict[str, Any] = {}
    start = 0
    for source, validation in faces.items():
        rows = slice(start, start + len(validation))
        start += len(validation)
        if source == "aflw":
            labelled = validation.pose_mask > 0
            yaw = yaw_report(outputs.pose_ed[rows, 0][labelled], validation.yaw_label[labelled])
            report["aflw_yaw_mae_deg"] = yaw["overall"]["mae"]
            report["aflw_yaw_mae_deg_by_abs_yaw"] = {
                name: figures["mae"] for name, figures in yaw["by_abs_yaw"].items()
            }
        if outputs.heatmaps is None:
            continue
        predicted = decode_heatmaps(outputs.heatmaps[rows], float(size))[0]
        truth = np.stack(
            [
                apply_affine(validation.landmarks[i], crop_affine(validation.box(i), size))
                for i in range(len(validation))
            ]
        )
        if source == "aflw":
            face_side = np.full(len(validation), size / (1.0 + 2.0 * manifest.crop_margin))
            nme = nme_per_face(predicted, np.nan_to_num(truth), validation.mask, face_side)
        else:
            nme = nme_per_face(predicted, truth, None, landmark_normaliser(truth, "interocular"))
        report[f"{source}_nme_pct"] = 100.0 * float(np.nanmean(nme))
    return report


def quantize_export(
    manifest_path: Path,
    checkpoint_path: Path,
    data_root: Path,
    per_source: int = CALIBRATION_FACES,
) -> dict[str, Any]:
    """Quantise every network of an export, check each and register it (``<role>_int8``).

    Returns the agreement per role, also stored in the manifest's ``training.int8``. A file
    beyond :data:`TOLERANCE` is deleted and listed under ``refused`` (with a warning): the
    export stays valid and runs in float (a barely trained model's flat heatmaps can be that
    sensitive).
    """
    manifest, files = load_manifest(manifest_path)
    folder = manifest_path.parent
    size = manifest.input_size
    _, checkpoint = load_checkpoint(checkpoint_path)
    split = split_faces(checkpoint_path, data_root)
    calibration = calibration_inputs(split, manifest, per_source, checkpoint.config.seed)
    faces = {
        source: label_poses(sides["val"], checkpoint.mean_face_mm, size)
        for source, sides in split.items()
    }
    validation = to_network_input(
        np.concatenate([face_crops(val, size) for val in faces.values()]),
        manifest.normalisation,
    )
    report: dict[str, Any] = {
        "method": "onnxruntime static QDQ: weights int8 per channel, activations uint8 "
        "(min/max); heads float",
        "calibration_crops": len(calibration),
        "agreement_on_validation_faces": {},
        "validation_accuracy": {},
        "refused": {},
    }
    for role in ("mnn", "encoder"):
        if role not in files:
            continue
        int8_role = f"{role}{INT8_SUFFIX}"
        int8_path = folder / f"{int8_role}.onnx"
        quantize_network(files[role], int8_path, calibration, manifest.outputs.image)
        # Registered first: the comparison loads it as the product does, from the manifest.
        add_files_to_manifest(manifest_path, {int8_role: int8_path})
        answers = answers_by_precision(folder, role, validation)
        figures = agreement(answers["float32"], answers["int8"], size)
        report["agreement_on_validation_faces"][role] = figures
        report["validation_accuracy"][role] = {
            precision: validation_accuracy(outputs, faces, manifest)
            for precision, outputs in answers.items()
        }
        beyond = {
            key: figures[key] for key, limit in TOLERANCE.items() if figures.get(key, 0.0) > limit
        }
        if beyond:
            # The float network is still a good model: drop this file, keep the export.
            data = json.loads(manifest_path.read_text())
            del data["files"][int8_role]
            set_manifest_fields(manifest_path, {"files": data["files"]})
            int8_path.unlink()
            report["refused"][role] = beyond
            _LOG.warning(
                "%s disagreed with its float network beyond %s: %s; not shipped, the CPU runs "
                "the float file",
                int8_path.name,
                TOLERANCE,
                beyond,
            )
    add_files_to_manifest(manifest_path, {}, {"int8": report})
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: quantise an export's networks and register them in its manifest."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="the export's manifest.json")
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="the run's last.pt (split, config)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="data root")
    parser.add_argument(
        "--faces-per-source",
        type=int,
        default=CALIBRATION_FACES,
        help="training faces per source for the activation ranges",
    )
    args = parser.parse_args(argv)
    report = quantize_export(args.manifest, args.checkpoint, args.data, args.faces_per_source)
    for role, figures in report["agreement_on_validation_faces"].items():
        shown = ", ".join(f"{key} {value:.4g}" for key, value in figures.items())
        verdict = "REFUSED (removed)" if role in report["refused"] else "registered"
        print(f"{role}{INT8_SUFFIX} {verdict}: {shown}")
        for precision, accuracy in report["validation_accuracy"][role].items():
            print(f"  {role} {precision} on validation: {json.dumps(accuracy)}")
    return 1 if report["refused"] else 0


if __name__ == "__main__":
    sys.exit(main())
