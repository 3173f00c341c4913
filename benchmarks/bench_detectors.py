"""Face-detector recall and time on the annotated faces of 300-W helen_test and afw.

A detection counts for an image when it overlaps the annotated face's landmark box (IoU of
the detector's box, mapped to the landmark-box convention, at least ``--iou``); faces that are
visible but not annotated are ignored, neither hits nor false positives (the data's README).
``--calibrate`` also fits the detector-box -> landmark-box map stored in
``headpose_ros/core/detection.py`` on helen_train (never on the test split).

Run: ``python benchmarks/bench_detectors.py [--shared ../shared]``. Research data: the 300-W
images are for non-commercial research only and are never copied into the project.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from headpose_ros.core.config import DetectorConfig
from headpose_ros.core.detection import MediaPipeFaceDetector
from headpose_ros.core.tracking import box_iou
from headpose_ros.tools.annotations import read_pts

REPO_ROOT = Path(__file__).resolve().parents[1]


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Bounding rectangle of the annotated landmarks."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def split_items(data_dir: Path, split: str) -> list[tuple[Path, np.ndarray]]:
    """(image, landmark box) for every annotated image of a split."""
    return [
        (jpg, landmark_box(read_pts(jpg.with_suffix(".pts"))))
        for jpg in sorted((data_dir / split).glob("*.jpg"))
    ]


def raw_mediapipe_boxes(graph, image_bgr: np.ndarray) -> list[np.ndarray]:  # noqa: ANN001
    """MediaPipe boxes in its own convention (for calibration)."""
    height, width = image_bgr.shape[:2]
    result = graph.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
    boxes = []
    for found in result.detections or []:
        rel = found.location_data.relative_bounding_box
        x0, y0 = rel.xmin * width, rel.ymin * height
        boxes.append(np.array([x0, y0, x0 + rel.width * width, y0 + rel.height * height]))
    return boxes


def calibrate(data_dir: Path, model_selection: int) -> None:
    """Fit centre offset and scale from MediaPipe's box to the landmark box on helen_train."""
    from mediapipe.python.solutions import face_detection

    graph = face_detection.FaceDetection(
        model_selection=model_selection, min_detection_confidence=0.3
    )
    ratios = []
    for jpg, target in tqdm(split_items(data_dir, "helen_train"), desc="calibrate", unit="img"):
        boxes = raw_mediapipe_boxes(graph, cv2.imread(str(jpg)))
        if not boxes:
            continue
        best = max(boxes, key=lambda b: box_iou(b, target))
        if box_iou(best, target) < 0.2:
            continue
        w, h = best[2] - best[0], best[3] - best[1]
        ratios.append(
            [
                ((target[0] + target[2]) - (best[0] + best[2])) / 2 / w,
                ((target[1] + target[3]) - (best[1] + best[3])) / 2 / h,
                (target[2] - target[0]) / w,
                (target[3] - target[1]) / h,
            ]
        )
    dx, dy, sx, sy = np.median(np.array(ratios), axis=0)
    print(
        f"calibration from {len(ratios)} faces: "
        f"BoxCalibration(dx={dx:.3f}, dy={dy:.3f}, sx={sx:.3f}, sy={sy:.3f})"
    )


def evaluate(
    name: str, detect, items: list[tuple[Path, np.ndarray]], iou: float
) -> tuple[float, float, float]:  # noqa: ANN001
    """Recall, median and p95 milliseconds of one detector over a split."""
    hits, times = 0, []
    for jpg, target in tqdm(items, desc=name, unit="img", leave=False):
        image = cv2.imread(str(jpg))
        start = time.perf_counter()
        boxes = detect(image)
        times.append((time.perf_counter() - start) * 1000.0)
        hits += any(box_iou(np.asarray(b), target) >= iou for b in boxes)
    return hits / len(items), float(np.median(times)), float(np.percentile(times, 95))


def detectors(shared: Path) -> dict[str, object]:
    """Detector name -> callable(image) -> boxes in landmark-box convention where calibrated."""
    found: dict[str, object] = {}
    for selection in (0, 1):
        detector = MediaPipeFaceDetector(DetectorConfig(model_selection=selection, min_score=0.5))
        found[f"mediapipe-{selection} (ours)"] = lambda image, d=detector: [
            det.box for det in d.detect(image)
        ]
    yunet_path = shared / "peers" / "yunet" / "yunet_n_320_320.onnx"
    if yunet_path.is_file() and hasattr(cv2, "FaceDetectorYN"):
        yunet = cv2.FaceDetectorYN.create(str(yunet_path), "", (320, 320), 0.6)

        def run_yunet(image: np.ndarray) -> list[np.ndarray]:
            yunet.setInputSize((image.shape[1], image.shape[0]))
            _, faces = yunet.detect(image)
            if faces is None:
                return []
            return [(f[0], f[1], f[0] + f[2], f[1] + f[3]) for f in faces]

        found["yunet (peer, own box)"] = run_yunet
    try:
        import dlib

        hog = dlib.get_frontal_face_detector()
        found["dlib-hog (peer)"] = lambda image: [
            (r.left(), r.top(), r.right(), r.bottom())
            for r in hog(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 0)
        ]
    except ImportError:
        print("dlib not installed: dlib HOG skipped (pip install -r requirements-bench.txt)")
    return found


def main() -> int:
    """Print recall and time per detector and split."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared")
    parser.add_argument(
        "--iou", type=float, default=0.4, help="IoU with the landmark box for a hit"
    )
    parser.add_argument(
        "--calibrate", action="store_true", help="fit the MediaPipe box map on helen_train"
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="only the first N images per split (0 = all)"
    )
    args = parser.parse_args()
    data_dir = args.shared / "data" / "300w_subset"
    if not data_dir.is_dir():
        print(f"SKIP: {data_dir} not found (the 300-W subset lives in ../shared)")
        return 0
    cv2.setNumThreads(2)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (others inflate times)")
    if args.calibrate:
        for selection in (0, 1):
            calibrate(data_dir, selection)
    splits = {split: split_items(data_dir, split) for split in ("helen_test", "afw")}
    if args.limit:
        splits = {split: items[: args.limit] for split, items in splits.items()}
    print(
        f"{'detector':34s} {'split':11s} {'faces':>5s} {'recall':>7s} "
        f"{'p50 ms':>7s} {'p95 ms':>7s}"
    )
    for name, detect in detectors(args.shared).items():
        for split, items in splits.items():
            recall, p50, p95 = evaluate(name, detect, items, args.iou)
            print(f"{name:34s} {split:11s} {len(items):5d} {recall:7.1%} {p50:7.2f} {p95:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
