"""Per-stage and whole-pipeline latency of HeadPoseEstimator, with peers side by side.

Scenes are 640x480 frames made of real 300-W helen_test faces pasted on a background and moving
a few pixels per frame (so tracking, not the detector, carries most frames), with 1 and with 5
faces. After a warm-up, at least 300 steady-state frames are timed per scene, in full mode and
in encoder-only mode, and the same frames go through the peers in the same run:

- MediaPipe face mesh (tracking mode) + PnP of six landmarks against our mean face,
- dlib's 68-point ERT shape predictor (+ PnP), on MediaPipe boxes (dlib's own HOG detector
  takes about 67 ms per frame here, which would only measure the detector),
- FSA-Net (two ONNX variants averaged) from ../shared/peers, on MediaPipe boxes.

The two peers on MediaPipe boxes get them as our synchronous mode does: our detector runs on
every ``detector.interval_frames``-th frame and its boxes are reused in between (run on every
frame, the timing would be the detector's, about 130 ms, not the peer's).

Our pipeline runs with the detector on its own thread (the node's default) and again with
synchronous detection (the offline tools' mode), frames delivered at ``--fps`` (30, as a
camera; 0 = back to back); the line "p95/p50" is the figure of issue 11 (target <= 1.5 with
detection still running every ``detector.interval_frames`` frames).
Prints p50/p95 per stage, FPS, RSS and our/peer ratios; ``--json`` also writes them to a file.
Run: ``python benchmarks/bench_pipeline.py [--model-dir DIR] [--frames 300]``; on a GPU machine
``--throughput cuda`` prints batched MNN faces/s instead. Nothing here is
asserted: figures are for the issue notes, measured on the machine that runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from headpose_ros.core.config import config_from_flat
from headpose_ros.core.detection import MediaPipeFaceDetector
from headpose_ros.core.metric_pose import camera_from_intrinsics
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.core.results import STAGES
from headpose_ros.tools.annotations import read_pts

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480
K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])
#: iBUG-68 indices and their MediaPipe face-mesh counterparts, for the peers' PnP.
PNP_IBUG = [30, 8, 36, 45, 48, 54]
PNP_MESH = [1, 152, 33, 263, 61, 291]
DLIB_MODEL = Path("/usr/share/dlib/shape_predictor_68_face_landmarks.dat")


def rss_mb() -> float:
    """Return the resident set size in MB (from /proc; falls back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def face_patches(data_dir: Path, count: int, side: int) -> list[np.ndarray]:
    """Square patches around annotated helen_test faces (face about 60% of the patch)."""
    patches = []
    for jpg in sorted((data_dir / "helen_test").glob("*.jpg"))[: count * 3 : 3]:
        image, points = cv2.imread(str(jpg)), read_pts(jpg.with_suffix(".pts"))
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        half = 0.85 * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        affine = np.array(
            [
                [side / (2 * half), 0, side / 2 - cx * side / (2 * half)],
                [0, side / (2 * half), side / 2 - cy * side / (2 * half)],
            ]
        )
        patches.append(cv2.warpAffine(image, affine, (side, side), borderMode=cv2.BORDER_REFLECT))
    return patches


def scene_frames(patches: list[np.ndarray], frames: int) -> list[np.ndarray]:
    """Frames with every patch drifting on a smooth path (a few pixels per frame)."""
    background = cv2.GaussianBlur(
        np.random.default_rng(0).integers(60, 200, (HEIGHT, WIDTH, 3), dtype=np.uint8), (0, 0), 15
    )
    side = patches[0].shape[0]
    slots = [
        (80 + (i % 3) * 200, 40 + (i // 3) * 230)
        if len(patches) > 1
        else ((WIDTH - side) // 2, (HEIGHT - side) // 2)
        for i in range(len(patches))
    ]
    out = []
    for f in range(frames):
        frame = background.copy()
        for i, (patch, (x, y)) in enumerate(zip(patches, slots, strict=True)):
            dx = int(round(12 * np.sin(f / 25.0 + i)))
            dy = int(round(8 * np.cos(f / 31.0 + 2 * i)))
            x0 = int(np.clip(x + dx, 0, WIDTH - side))
            y0 = int(np.clip(y + dy, 0, HEIGHT - side))
            frame[y0 : y0 + side, x0 : x0 + side] = patch
        out.append(frame)
    return out


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def run_ours(
    frames: list[np.ndarray],
    model_dir: str,
    encoder_only: bool,
    warmup: int,
    asynchronous: bool = True,
    fps: float = 0.0,
    device: str = "cpu",
) -> dict:
    """Steady-state per-stage timings of HeadPoseEstimator on the frames.

    ``fps`` > 0 delivers the frames at that rate, as a camera does (the detector thread then
    works between frames); 0 sends them back to back. ``device``: the network's.
    """
    settings = {
        "inference.device": device,
        "inference.threads": 2,
        "tracking.deterministic_ids": True,
        "detector.asynchronous": asynchronous,
    }
    if model_dir:
        settings["inference.model_dir"] = model_dir
    settings["inference.encoder_only"] = encoder_only
    rss_before = rss_mb()
    estimator = HeadPoseEstimator(config_from_flat(settings))
    camera = camera_from_intrinsics(K, np.zeros(5))
    stages: dict[str, list[float]] = {stage: [] for stage in STAGES}
    faces, merged = [], 0
    start = time.perf_counter()
    for index, frame in enumerate(
        tqdm(frames, desc="ours" + (" encoder-only" if encoder_only else ""), leave=False)
    ):
        if fps > 0:
            time.sleep(max(0.0, start + index / fps - time.perf_counter()))
        result = estimator.estimate(frame, index * 33_333_333, camera)
        if index == warmup:
            runs_at_warmup = estimator.counters["detector_runs"]
        if index < warmup:
            continue
        merged += result.detector_ran
        faces.append(len(result.faces))
        for stage in STAGES:
            stages[stage].append(result.timings_ms[stage])
    rss_after = rss_mb()
    estimator.close()
    return {
        "rss_process_mb": rss_after,
        "rss_added_by_estimator_mb": rss_after - rss_before,
        "stages_ms": {stage: percentiles(v) for stage, v in stages.items()},
        "faces_mean": float(np.mean(faces)),
        "detector_runs": estimator.counters["detector_runs"] - runs_at_warmup,
        "frames_merging_detections": merged,
        "frames": len(faces),
        "or": estimator.regressor is not None,
        "asynchronous": asynchronous,
        "fps": fps,
        "precision": estimator.precision,
    }


def timed(
    frames: list[np.ndarray], warmup: int, step: Callable[[np.ndarray], int], name: str
) -> dict:
    """Total per-frame milliseconds of a peer's step (which returns its face count)."""
    times, faces = [], []
    for index, frame in enumerate(tqdm(frames, desc=name, leave=False)):
        start = time.perf_counter()
        count = step(frame)
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
            faces.append(count)
    return {"total_ms": percentiles(times), "faces_mean": float(np.mean(faces))}


def pnp(points_2d: np.ndarray, points_3d: np.ndarray) -> None:
    """Solve the PnP a peer needs for a 6-DoF pose (same solver as ours)."""
    cv2.solvePnP(points_3d, points_2d.astype(np.float64), K, np.zeros(5), flags=cv2.SOLVEPNP_SQPNP)


def every_nth(detect: Callable[[np.ndarray], list], every: int) -> Callable[[np.ndarray], list]:
    """``detect`` on every ``every``-th frame, its last answer reused in between."""
    state: dict = {"frames": 0, "last": []}

    def scheduled(frame: np.ndarray) -> list:
        if state["frames"] % every == 0:
            state["last"] = detect(frame)
        state["frames"] += 1
        return state["last"]

    return scheduled


def peers(
    frames: list[np.ndarray], warmup: int, max_faces: int, mean_face_m: np.ndarray, shared: Path
) -> dict:
    """Run every available peer on the same frames."""
    from mediapipe.python.solutions import face_mesh

    results: dict[str, dict] = {}
    mesh = face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=max_faces, refine_landmarks=False
    )
    model_points = mean_face_m[PNP_IBUG]

    def mesh_step(frame: np.ndarray) -> int:
        found = mesh.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).multi_face_landmarks or []
        for landmarks in found:
            pts = np.array(
                [
                    [landmarks.landmark[i].x * WIDTH, landmarks.landmark[i].y * HEIGHT]
                    for i in PNP_MESH
                ]
            )
            pnp(pts, model_points)
        return len(found)

    results["mediapipe face mesh + PnP"] = timed(frames, warmup, mesh_step, "face mesh")
    mesh.close()
    detector_config = config_from_flat({}).detector
    detector = MediaPipeFaceDetector(detector_config)
    try:
        import dlib

        if DLIB_MODEL.is_file():
            predictor = dlib.shape_predictor(str(DLIB_MODEL))

            dlib_boxes = every_nth(detector.detect, detector_config.interval_frames)

            def dlib_step(frame: np.ndarray) -> int:
                grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                detections = dlib_boxes(frame)
                for det in detections:
                    x0, y0, x1, y1 = (int(v) for v in det.box)
                    shape = predictor(grey, dlib.rectangle(x0, y0, x1, y1))
                    pts = np.array(
                        [[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64
                    )
                    pnp(pts[PNP_IBUG], model_points)
                return len(detections)

            results["dlib ERT + PnP (MediaPipe boxes)"] = timed(frames, warmup, dlib_step, "dlib")
        else:
            print(f"dlib ERT skipped: {DLIB_MODEL} missing (apt install libdlib-data)")
    except ImportError:
        print("dlib ERT skipped: dlib not installed (pip install -r requirements-bench.txt)")
    fsa_dir = shared / "peers" / "fsanet"
    if (fsa_dir / "fsanet1x1.onnx").is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        sessions = [
            ort.InferenceSession(str(fsa_dir / n), options, providers=["CPUExecutionProvider"])
            for n in ("fsanet1x1.onnx", "fsanetvar.onnx")
        ]

        fsa_boxes = every_nth(detector.detect, detector_config.interval_frames)

        def fsa_step(frame: np.ndarray) -> int:
            detections = fsa_boxes(frame)
            crops = []
            for det in detections:
                x0, y0, x1, y1 = det.box
                w, h = x1 - x0, y1 - y0
                xa, ya = int(max(0, x0 - 0.6 * w)), int(max(0, y0 - 0.6 * h))
                xb, yb = int(min(WIDTH, x1 + 0.6 * w)), int(min(HEIGHT, y1 + 0.6 * h))
                crops.append(cv2.resize(frame[ya:yb, xa:xb], (64, 64)))
            if crops:
                batch = ((np.stack(crops).astype(np.float32) - 127.5) / 128.0).transpose(
                    0, 3, 1, 2
                )
                for crop in batch:  # the exported graphs take batch 1
                    _ = [s.run(None, {s.get_inputs()[0].name: crop[None]}) for s in sessions]
            return len(detections)

        results["FSA-Net (MediaPipe boxes)"] = timed(frames, warmup, fsa_step, "fsa-net")
    else:
        print(f"FSA-Net skipped: {fsa_dir} not found")
    detector.close()
    return results


def throughput(model_dir: str, device: str) -> int:
    """Faces per second of the MNN alone for growing batches (the GPU figure of issue 5)."""
    from headpose_ros.core.inference import ModelRunner, load_model

    settings = {"inference.device": device, "inference.threads": 0}
    if model_dir:
        settings["inference.model_dir"] = model_dir
    config = config_from_flat(settings).inference
    runner = ModelRunner(load_model(config), config)
    size = runner.manifest.input_size
    print(f"MNN throughput on {runner.device}, {runner.precision} ({size} px input)")
    rng = np.random.default_rng(0)
    for batch in (1, 4, 16, 64, 256):
        data = rng.random((batch, 3, size, size), dtype=np.float32)
        runner.run(data)  # warm-up (and cuDNN autotuning on a GPU)
        repeats = max(3, 256 // batch)
        start = time.perf_counter()
        for _ in range(repeats):
            runner.run(data)
        seconds = (time.perf_counter() - start) / repeats
        print(
            f"batch {batch:4d}: {seconds * 1000:8.2f} ms per call, {batch / seconds:9.0f} faces/s"
        )
    return 0


def main() -> int:
    """Run the scenes and print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", default="", help="model folder (default: the shipped model)"
    )
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared")
    parser.add_argument(
        "--frames", type=int, default=300, help="timed frames per scene (>= 300 for the notes)"
    )
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument(
        "--fps",
        type=float,
        default=30.0,
        help="deliver frames at this rate, as a camera does (0 = back to back)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--skip-peers", action="store_true", help="time only our pipeline")
    parser.add_argument(
        "--throughput",
        metavar="DEVICE",
        help="only measure batched MNN throughput (faces/s) on this device (e.g. cuda, cpu)",
    )
    args = parser.parse_args()
    if args.throughput:
        return throughput(args.model_dir, args.throughput)
    data_dir = args.shared / "data" / "300w_subset"
    if not data_dir.is_dir():
        print(f"SKIP: {data_dir} not found (the 300-W subset lives in ../shared)")
        return 0
    cv2.setNumThreads(2)
    report: dict = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, no GPU",
        "scenes": {},
    }
    # Other work on the machine inflates every figure: say how busy it was.
    report["load_average_1min_start"] = os.getloadavg()[0]
    print(
        f"machine: {report['machine']}; load average {os.getloadavg()[0]:.1f}; "
        f"RSS at start {rss_mb():.0f} MB"
    )
    for faces, side in ((1, 200), (5, 150)):
        frames = scene_frames(face_patches(data_dir, faces, side), args.frames + args.warmup)
        scene = {"ours": run_ours(frames, args.model_dir, False, args.warmup, True, args.fps)}
        scene["ours_synchronous"] = run_ours(
            frames, args.model_dir, False, args.warmup, False, args.fps
        )
        scene["ours_encoder_only"] = run_ours(
            frames, args.model_dir, True, args.warmup, True, args.fps
        )
        estimator = HeadPoseEstimator(
            config_from_flat({"inference.model_dir": args.model_dir} if args.model_dir else {})
        )
        mean_face = estimator.manifest.mean_face_m
        estimator.close()
        scene["peers"] = (
            {} if args.skip_peers else peers(frames, args.warmup, faces, mean_face, args.shared)
        )
        scene["rss_end_mb"] = rss_mb()
        report["scenes"][f"{faces} face(s)"] = scene
        print_scene(faces, scene)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    report["load_average_1min_end"] = os.getloadavg()[0]
    print(f"load average at the end: {report['load_average_1min_end']:.1f}")
    print(f"\npeak RSS of the whole run (ours + all peers loaded): {report['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def print_scene(faces: int, scene: dict) -> None:
    """One scene's tables: our stages, encoder-only, peers and ratios."""
    ours = scene["ours"]
    print(
        f"\n=== {faces} face(s), 640x480, {ours['frames']} steady-state frames, "
        f"{ours['faces_mean']:.2f} faces/frame found, {ours['detector_runs']} detector runs "
        f"merged, OR {'on' if ours['or'] else 'absent'}, network {ours['precision']}"
    )
    print(f"{'stage':10s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for stage, value in ours["stages_ms"].items():
        print(f"{stage:10s} {value['p50']:8.2f} {value['p95']:8.2f}")
    total = ours["stages_ms"]["total"]
    print(
        f"whole pipeline: p50 {total['p50']:.2f} ms ({1000 / total['p50']:.0f} FPS), "
        f"p95 {total['p95']:.2f} ms; RSS {ours['rss_process_mb']:.0f} MB for the process "
        f"(its frames included), {ours['rss_added_by_estimator_mb']:.0f} MB added by the estimator"
    )
    rate = f"{ours['fps']:.0f} fps" if ours["fps"] > 0 else "back to back"
    for name in ("ours", "ours_synchronous"):
        run = scene[name]
        run_total = run["stages_ms"]["total"]
        print(
            f"detection {'asynchronous' if run['asynchronous'] else 'synchronous '} "
            f"(frames {rate}): p50 {run_total['p50']:.2f} ms, p95 {run_total['p95']:.2f} ms, "
            f"p95/p50 {run_total['p95'] / run_total['p50']:.2f}; detector runs merged "
            f"{run['detector_runs']} in {run['frames']} frames; "
            f"{run['faces_mean']:.2f} faces/frame"
        )
    encoder = scene["ours_encoder_only"]
    enc = encoder["stages_ms"]
    print(
        f"encoder-only: total p50 {enc['total']['p50']:.2f} ms, p95 {enc['total']['p95']:.2f} ms; "
        f"network per face p50 {enc['mnn']['p50'] / faces:.2f} ms; "
        f"{encoder['faces_mean']:.2f} faces/frame, {encoder['detector_runs']} detector runs"
    )
    print(f"{'peer':36s} {'p50 ms':>8s} {'p95 ms':>8s} {'faces':>6s} {'ours/peer p50':>14s}")
    for name, peer in scene["peers"].items():
        ratio = total["p50"] / peer["total_ms"]["p50"]
        print(
            f"{name:36s} {peer['total_ms']['p50']:8.2f} {peer['total_ms']['p95']:8.2f} "
            f"{peer['faces_mean']:6.2f} {ratio:14.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
