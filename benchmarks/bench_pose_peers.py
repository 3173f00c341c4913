"""Head-pose accuracy of ours and the peers, side by side, on the AFLW validation faces.

Why: AFLW's yaw label is noisy (5.45 degrees from a 3D fit on average), so an MAE against it
says little until a model known to be good is measured the same way. Here every model sees
the same faces from the same boxes, in one run, against AFLW's label by |yaw| bin:

- ours: the core's network runner with the node's defaults (the CPU's precision, mirror
  averaging), on the crop rule's crop of the AFLW points' box, as ``headpose-evaluate``'s
  oracle pass (the OR does not change the pose);
- FSA-Net (../shared/peers, the two ONNX variants averaged) on its usual crop: the same face
  box enlarged by 0.6 of its side on each side, 64x64;
- MediaPipe face mesh (static images) + PnP of six landmarks against our mean face, on the
  crop doubled and padded so that its detector sees a whole head.

A peer's yaw sign is matched to ours by its correlation with the labels (printed). Faces: the
AFLW validation split named in ``training/results/compact/aflw_val_per_face.csv`` (held out
from training by photograph). Needs ../shared and the training package
(``scripts/setup.sh --training``). Nothing is asserted; ``--json`` writes the figures.
Run: ``python benchmarks/bench_pose_peers.py [--model-dir DIR] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from headpose_ros.core.config import config_from_flat
from headpose_ros.core.crop import SquareBox, crop_affine, crop_image, to_network_input
from headpose_ros.core.inference import ModelRunner, load_model
from headpose_training.calibration import face_crops
from headpose_training.evaluate import yaw_report
from headpose_training.faces import FaceSet, load_aflw_faces
from headpose_training.pose_labels import pose_from_landmarks
from headpose_training.quantize import run_in_batches

REPO_ROOT = Path(__file__).resolve().parent.parent
VALIDATION_LIST = REPO_ROOT / "training" / "results" / "compact" / "aflw_val_per_face.csv"
#: MediaPipe face-mesh indices and the iBUG-68 points they stand for (nose tip, chin, outer eye
#: corners, mouth corners), as in bench_pipeline.
PNP_MESH = [1, 152, 33, 263, 61, 291]
PNP_IBUG = [30, 8, 36, 45, 48, 54]
FSA_CONTEXT = 0.6
FSA_SIZE = 64
MESH_SCALE = 2
MESH_PAD = 60


def face_side(box: SquareBox, crop_margin: float) -> float:
    """Side of the face box inside a crop-rule box (the crop rule adds ``crop_margin`` a side)."""
    return box.side / (1.0 + 2.0 * crop_margin)


def ours(faces: FaceSet, model_dir: str) -> np.ndarray:
    """Yaw (deg) of the shipped network, as the node runs it on the CPU."""
    settings = {"inference.device": "cpu", "inference.threads": 2}
    if model_dir:
        settings["inference.model_dir"] = model_dir
    config = config_from_flat(settings).inference
    runner = ModelRunner(load_model(config), config)
    print(f"ours: {runner.role} on {runner.device}, {runner.precision}")
    crops = face_crops(faces, runner.manifest.input_size)
    inputs = to_network_input(crops, runner.manifest.normalisation)
    return run_in_batches(runner, inputs).pose_ed[:, 0].astype(np.float64)


def fsa_net(
    images: list[np.ndarray], boxes: list[SquareBox], crop_margin: float, folder: Path
) -> np.ndarray:
    """Yaw (deg, FSA-Net's own sign) of the two FSA-Net variants averaged."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = [
        ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        for name in ("fsanet1x1.onnx", "fsanetvar.onnx")
    ]
    yaw = np.full(len(images), np.nan)
    for index, (image, box) in enumerate(
        tqdm(list(zip(images, boxes, strict=True)), desc="FSA-Net", unit="face", mininterval=5)
    ):
        side = face_side(box, crop_margin) * (1.0 + 2.0 * FSA_CONTEXT)
        crop = crop_image(
            image,
            crop_affine(SquareBox(box.cx, box.cy, side), FSA_SIZE),
            FSA_SIZE,
            cv2.BORDER_REPLICATE,
        )
        batch = ((crop.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        angles = [s.run(None, {s.get_inputs()[0].name: batch})[0].ravel() for s in sessions]
        yaw[index] = float(np.mean([a[0] for a in angles]))
    return yaw


def mesh_pnp(images: list[np.ndarray], mean_face_m: np.ndarray) -> np.ndarray:
    """Yaw (deg, our convention) of MediaPipe face mesh + PnP; NaN where no face was found."""
    from mediapipe.python.solutions import face_mesh

    mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
    yaw = np.full(len(images), np.nan)
    for index, image in enumerate(tqdm(images, desc="face mesh", unit="face", mininterval=5)):
        big = cv2.resize(image, None, fx=MESH_SCALE, fy=MESH_SCALE)
        frame = cv2.copyMakeBorder(big, *(4 * [MESH_PAD]), cv2.BORDER_REPLICATE)
        found = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).multi_face_landmarks
        if not found:
            continue
        side = frame.shape[0]
        points = np.array([[found[0].landmark[i].x, found[0].landmark[i].y] for i in PNP_MESH])
        try:
            yaw[index] = pose_from_landmarks(points * side, mean_face_m[PNP_IBUG], side)[0]
        except ValueError:
            continue
    mesh.close()
    return yaw


def matched_sign(yaw: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, float]:
    """``yaw`` with its sign turned to ours when it correlates negatively with the labels."""
    answered = np.isfinite(yaw)
    correlation = float(np.corrcoef(yaw[answered], label[answered])[0, 1])
    return (yaw if correlation >= 0 else -yaw), correlation


def by_bin(yaw: np.ndarray, label: np.ndarray) -> dict[str, dict[str, float]]:
    """MAE, slope and the share of faces answered, overall and per |yaw| bin of the label.

    MAE and slope are the evaluation's own (``yaw_report``, over the answered faces).
    """
    answered = yaw_report(yaw, label)
    every_face = yaw_report(label, label)  # the same bins over every labelled face
    pairs = [("all", answered["overall"], every_face["overall"])]
    pairs += [
        (b, answered["by_abs_yaw"][b], every_face["by_abs_yaw"][b])
        for b in every_face["by_abs_yaw"]
    ]
    return {
        name: {
            "faces": faces["count"],
            "answered": got["count"] / max(faces["count"], 1),
            "mae": got["mae"],
            "slope": got["slope"],
        }
        for name, got, faces in pairs
    }


def main() -> int:
    """Load the faces, run every model and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", default="", help="model folder (default: the shipped one)")
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    aflw_dir = args.shared / "data" / "aflw_crops"
    if not aflw_dir.is_dir() or not VALIDATION_LIST.is_file():
        print(f"needs {aflw_dir} and {VALIDATION_LIST}")
        return 1
    config = config_from_flat(
        {"inference.model_dir": args.model_dir} if args.model_dir else {}
    ).inference
    manifest = load_model(config).manifest
    with open(VALIDATION_LIST, newline="") as stream:
        wanted = {row["image"] for row in csv.DictReader(stream)}
    everything = load_aflw_faces(aflw_dir, manifest.crop_margin, None)
    faces = everything.subset([i for i, n in enumerate(everything.names) if n in wanted])
    labelled = np.isfinite(faces.yaw_label) & (np.abs(faces.yaw_label) <= 90.0)
    faces = faces.subset(np.flatnonzero(labelled))
    images = list(faces.images)
    boxes = [faces.box(i) for i in range(len(faces))]
    label = faces.yaw_label.astype(np.float64)
    print(
        f"machine: {platform.machine()}, AFLW validation faces with |yaw label| <= 90: "
        f"{len(faces)}"
    )

    models: dict[str, Callable[[], np.ndarray]] = {"ours": lambda: ours(faces, args.model_dir)}
    fsa_dir = args.shared / "peers" / "fsanet"
    if (fsa_dir / "fsanet1x1.onnx").is_file():
        models["FSA-Net"] = lambda: fsa_net(images, boxes, manifest.crop_margin, fsa_dir)
    else:
        print(f"FSA-Net skipped: {fsa_dir} not found")
    try:
        import mediapipe  # noqa: F401

        models["MediaPipe face mesh + PnP"] = lambda: mesh_pnp(images, manifest.mean_face_m)
    except ImportError:
        print("face mesh skipped: mediapipe not installed (pip install -r requirements-bench.txt)")

    report: dict[str, dict] = {}
    for name, run in models.items():
        yaw, correlation = matched_sign(run(), label)
        if correlation < 0:
            print(
                f"{name}: yaw sign turned to ours (correlation with the labels {correlation:.3f})"
            )
        report[name] = by_bin(yaw, label)

    bins = list(report["ours"])
    print("\nyaw MAE against AFLW's label (deg), slope, share answered; ours/peer MAE")
    print(f"{'model':28s} " + " ".join(f"{b:>24s}" for b in bins))
    for name, rows in report.items():
        cells = [
            f"{rows[b]['mae']:6.2f} {rows[b]['slope']:5.2f} {100 * rows[b]['answered']:5.1f}%"
            for b in bins
        ]
        print(f"{name:28s} " + " ".join(f"{c:>24s}" for c in cells))
    for name, rows in report.items():
        if name != "ours":
            ratios = " / ".join(f"{report['ours'][b]['mae'] / rows[b]['mae']:.2f}" for b in bins)
            print(f"ours/{name} MAE ({' / '.join(bins)}): {ratios}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
