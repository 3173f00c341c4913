"""The GPU path in one short run: the first thing to do on a machine with a CUDA GPU.

The estimator's ``inference.device: cuda`` path has tests for its device resolution, but a
GPU is lent only now and then, for minutes. This script checks, with nothing from ../shared
(only the checkout travels to a lent machine):

1. onnxruntime's providers, and which device and precision the node's ``auto`` picks;
2. the same answers: the float network on ``--device`` against the float network on the CPU,
   on 64 crops of a real face (scikit-image's public-domain astronaut, shifted, scaled,
   rotated, mirrored), mirror averaging on as in the node. It prints the largest differences
   of angles, translation, decoded landmarks and visibility, and the CPU's int8 network
   against the device's answers (what a user switching devices sees);
3. faces/s of the MNN alone for growing batches on the device;
4. per-frame latency of the whole estimator on 640x480 frames of 1 and 5 drifting faces, on the
   device and on the CPU, in the same run.

Exit status 1 when the device's answers differ from the CPU's beyond :data:`TOLERANCE`. The
differences are measured as ``headpose-quantize`` measures int8 against float
(:func:`headpose_training.quantize.agreement`), so the training package must be importable
(``scripts/setup.sh --training``, or ``PYTHONPATH=training`` beside the core's dependencies).
Run: ``python benchmarks/check_gpu.py [--device cuda] [--json FILE]``; ``--device cpu`` checks
the script itself on a machine without a GPU (differences are then zero).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from bench_pipeline import run_ours, scene_frames, throughput

from headpose_ros.core.config import ConfigError, config_from_flat
from headpose_ros.core.crop import SquareBox, crop_affine, crop_image, to_network_input
from headpose_ros.core.inference import ModelRunner, load_model
from headpose_training.quantize import agreement

#: Largest device-versus-CPU difference accepted for the float network (cuDNN's convolutions
#: round differently from the CPU's; anything near these means a broken provider or model).
TOLERANCE = {
    "angles_deg_max": 0.1,
    "translation_relative_max": 1e-3,
    "landmarks_px_max": 0.1,
    "visibility_max": 1e-3,
}
#: The crop rule's box of the astronaut's face in scikit-image's 512x512 portrait (centre x, y
#: and side, pixels): the shipped model's landmarks span x 179-273, y 87-180 there.
FACE = SquareBox(226.0, 133.0, 150.0)
CROPS = 64


def astronaut_bgr() -> np.ndarray:
    """scikit-image's public-domain astronaut portrait, BGR."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def varied_crops(image: np.ndarray, size: int, count: int) -> np.ndarray:
    """``count`` crops of the face, each shifted, scaled, rotated and half of them mirrored."""
    rng = np.random.default_rng(0)
    crops = []
    for index in range(count):
        box = SquareBox(
            FACE.cx + rng.uniform(-0.08, 0.08) * FACE.side,
            FACE.cy + rng.uniform(-0.08, 0.08) * FACE.side,
            FACE.side * rng.uniform(0.85, 1.2),
        )
        crop = crop_image(image, crop_affine(box, size, np.deg2rad(rng.uniform(-30, 30))), size)
        crops.append(crop[:, ::-1] if index % 2 else crop)
    return np.stack(crops)


def runner(device: str, precision: str, model_dir: str) -> ModelRunner:
    """Build the node's network runner on ``device`` in ``precision``."""
    settings = {"inference.device": device, "inference.precision": precision}
    if model_dir:
        settings["inference.model_dir"] = model_dir
    config = config_from_flat(settings).inference
    return ModelRunner(load_model(config), config)


def main() -> int:
    """Run the four checks and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="device to check against the CPU")
    parser.add_argument("--model-dir", default="", help="model folder (default: the shipped one)")
    parser.add_argument("--frames", type=int, default=300, help="timed frames per scene")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    report: dict = {"providers": ort.get_available_providers()}
    print(f"onnxruntime {ort.__version__}, providers {report['providers']}")
    auto = runner("auto", "auto", args.model_dir)
    report["auto"] = f"{auto.device}, {auto.precision}"
    print(f"inference.device auto -> {report['auto']}")

    device = runner(args.device, "float32", args.model_dir)
    size = device.manifest.input_size
    inputs = to_network_input(
        varied_crops(astronaut_bgr(), size, CROPS), device.manifest.normalisation
    )
    answers = {
        "device float32": device.run(inputs),
        "cpu float32": runner("cpu", "float32", args.model_dir).run(inputs),
        "cpu auto": runner("cpu", "auto", args.model_dir).run(inputs),
    }
    same = agreement(answers["cpu float32"], answers["device float32"], size)
    report[f"{args.device} float32 vs cpu float32"] = same
    report[f"{args.device} float32 vs cpu auto"] = agreement(
        answers["cpu auto"], answers["device float32"], size
    )
    for name in (f"{args.device} float32 vs cpu float32", f"{args.device} float32 vs cpu auto"):
        print(f"{name} ({CROPS} crops): {json.dumps(report[name])}")
    beyond = {key: same[key] for key, limit in TOLERANCE.items() if same[key] > limit}
    print("same answers:", "NO, beyond tolerance " + json.dumps(beyond) if beyond else "yes")

    throughput(args.model_dir, args.device)

    warmup = 30
    face = crop_image(astronaut_bgr(), crop_affine(FACE, 150), 150)
    for faces in (1, 5):
        frames = scene_frames([face] * faces, args.frames + warmup)
        for where in (args.device, "cpu"):
            try:
                timing = run_ours(frames, args.model_dir, False, warmup, fps=30.0, device=where)
            except ConfigError as error:  # e.g. no mediapipe for the built-in detector
                print(f"per-frame latency skipped: {error}")
                break
            total = timing["stages_ms"]["total"]
            report[f"{faces} faces on {where}"] = timing
            print(
                f"{faces} face(s), {where} ({timing['precision']}): p50 {total['p50']:.2f} ms, "
                f"p95 {total['p95']:.2f} ms, network p50 {timing['stages_ms']['mnn']['p50']:.2f} "
                f"ms, {timing['faces_mean']:.2f} faces/frame"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if beyond else 0


if __name__ == "__main__":
    sys.exit(main())
