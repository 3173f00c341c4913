"""Face-detection benchmark: recall and time on real faces at every yaw, near, far and in groups.

Scenes (fixed seed, so every run draws the same faces and places):

- **300-W splits** (helen_test, afw, lfpw_train, helen_train): a hit is a detection whose box,
  mapped to the landmark-box convention, overlaps the annotated face's landmark box with IoU
  >= ``--iou``. Faces that are visible but not annotated are neither hits nor false positives.
- **Pasted AFLW** (``../shared/data/aflw_crops``, real 120x120 face crops over the whole yaw
  range): faces pasted into 640x480 scenes at several face heights (landmark-box height, brow
  to chin), three faces per frame; recall by |yaw| bin [0,30), [30,60), [60,90+] and by
  height.
- **Far faces**: 20-40 px high, eight per frame, in 640x480 and 1280x720 frames.
- **Groups**: 12-16 faces per frame (640x480: 40-64 px; 1280x720: 60-110 px).
- **Grid**: twelve real helen_test faces in a 4x3 grid of one 1280x720 frame, as reported in
  issue 11 (7 of 12 found by the old default).

A pasted face is hit by a detection lying mostly on its crop (at least half of the detection's
area) whose height is 0.3-1.3 times the crop's side; detections and faces are matched one to
one, best overlap first. Unmatched detections are counted as false positives per frame.

``--calibrate`` fits the detector-box -> landmark-box maps stored in
``headpose_ros/core/detection.py`` on helen_train (never on the test split).

Run: ``python benchmarks/bench_detectors.py [--shared ../shared] [--per-bin 200]``. Times are
per frame (milliseconds, p50/p95) on this machine; recall does not depend on the machine.
Research data: 300-W and AFLW are for non-commercial research only and are never copied into
the project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from bench_pipeline import face_patches  # the benchmarks' folder is the script's own

from headpose_ros.core.config import DetectorConfig, config_from_flat
from headpose_ros.core.detection import create_detector, open_blazeface
from headpose_ros.core.tracking import box_iou
from headpose_ros.tools.annotations import read_pts

if TYPE_CHECKING:
    from headpose_ros.core.pipeline import HeadPoseEstimator

REPO_ROOT = Path(__file__).resolve().parents[1]
YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 181.0))
YAW_NAMES = ("|yaw|<30", "30-60", ">=60")
#: Faces at least this high (pixels; 24 less half a pixel of rounding) count as ">= 24 px".
MIN_HEIGHT = 23.5
#: Face heights (landmark box, pixels) of the pasted-AFLW scenes.
PASTED_HEIGHTS = (24, 32, 48, 64, 96, 128, 192)
Detect = Callable[[np.ndarray], list[tuple[float, float, float, float]]]


@dataclass
class Scene:
    """One benchmark frame: the image and its faces (crop box, yaw, landmark-box height)."""

    image: np.ndarray
    crops: list[np.ndarray]
    yaws: list[float]
    heights: list[float]


# ----------------------------------------------------------------------------- 300-W
def landmark_box(points: np.ndarray) -> np.ndarray:
    """Bounding rectangle of the annotated landmarks."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def split_items(data_dir: Path, split: str) -> list[tuple[Path, np.ndarray]]:
    """(image, landmark box) for every annotated image of a split."""
    return [
        (jpg, landmark_box(read_pts(jpg.with_suffix(".pts"))))
        for jpg in sorted((data_dir / split).glob("*.jpg"))
    ]


def calibrate(data_dir: Path, model_selection: int) -> None:
    """Fit centre offset and scale from BlazeFace's raw box to the landmark box on helen_train.

    The raw boxes are taken at the default ``detector.min_score``: BlazeFace blends the boxes of
    all its anchors above that score, so the threshold shapes the box.
    """
    blazeface = open_blazeface(model_selection, DetectorConfig().min_score)
    ratios = []
    for jpg, target in split_items(data_dir, "helen_train"):
        faces = blazeface.run(cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB))
        boxes = [np.array([x, y, x + w, y + h]) for _, x, y, w, h in faces]
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
    blazeface.close()
    dx, dy, sx, sy = np.median(np.array(ratios), axis=0)
    print(
        f"calibration of model {model_selection} from {len(ratios)} faces: "
        f"BoxCalibration(dx={dx:.3f}, dy={dy:.3f}, sx={sx:.3f}, sy={sy:.3f})"
    )


def evaluate_split(detect: Detect, items: list[tuple[Path, np.ndarray]], iou: float) -> dict:
    """Recall and per-image milliseconds of one detector over a 300-W split."""
    hits, times = 0, []
    for jpg, target in items:
        image = cv2.imread(str(jpg))
        start = time.perf_counter()
        boxes = detect(image)
        times.append((time.perf_counter() - start) * 1000.0)
        hits += any(box_iou(np.asarray(b), target) >= iou for b in boxes)
    return {"faces": len(items), "found": hits, **percentiles(times)}


# ----------------------------------------------------------------------------- pasted scenes
def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Paint a face-free scene: soft colour regions, a few hard-edged blocks and sensor noise."""
    field = rng.integers(30, 225, (height // 48 + 2, width // 48 + 2, 3), dtype=np.uint8)
    image = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, width // 3)), y0 + int(rng.integers(20, height // 3))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
    noise = rng.normal(0.0, 4.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


class AflwFaces:
    """The AFLW crops with their yaw and landmark-box height (crop pixels)."""

    def __init__(self, folder: Path) -> None:
        """Read labels.json; the crops are read when pasted."""
        self.folder = folder
        self.labels = json.loads((folder / "labels.json").read_text())
        self.heights = np.array(
            [np.ptp([p[1] for p in entry["points"] if p is not None]) for entry in self.labels]
        )
        self.yaws = np.array([abs(float(entry["yaw_deg"])) for entry in self.labels])

    def sample(self, rng: np.random.Generator, per_bin: int) -> np.ndarray:
        """Pick ``per_bin`` faces from each |yaw| bin (faces with a usable height)."""
        chosen = []
        usable = self.heights >= 20.0
        for low, high in YAW_BINS:
            pool = np.flatnonzero(usable & (self.yaws >= low) & (self.yaws < high))
            chosen.append(rng.choice(pool, min(per_bin, len(pool)), replace=False))
        return rng.permutation(np.concatenate(chosen))

    def crop(self, index: int) -> np.ndarray:
        """Read the 120x120 BGR crop."""
        return cv2.imread(str(self.folder / self.labels[index]["image"]))


def paste_scenes(
    faces: AflwFaces,
    indices: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    per_frame: tuple[int, int],
    heights: Callable[[np.random.Generator], float],
) -> list[Scene]:
    """Frames of ``size`` with ``per_frame`` (min, max) non-overlapping pasted faces each."""
    width, height = size
    scenes: list[Scene] = []
    queue = list(indices)
    while queue:
        count = int(rng.integers(per_frame[0], per_frame[1] + 1))
        image = background(rng, width, height)
        occupied: list[np.ndarray] = []
        scene = Scene(image, [], [], [])
        for _ in range(count):
            if not queue:
                break
            index = queue[-1]
            face_height = heights(rng)
            side = int(round(120.0 * face_height / faces.heights[index]))
            if side >= min(width, height):
                queue.pop()
                continue
            for _attempt in range(50):
                x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
                box = np.array([x, y, x + side, y + side], dtype=np.float64)
                if all(box_iou(box, other) == 0.0 for other in occupied):
                    break
            else:
                break  # the frame is full: this face goes into the next one
            queue.pop()
            occupied.append(box)
            crop = cv2.resize(faces.crop(index), (side, side), interpolation=cv2.INTER_AREA)
            image[y : y + side, x : x + side] = crop
            scene.crops.append(box)
            scene.yaws.append(float(faces.yaws[index]))
            scene.heights.append(float(faces.heights[index]) * side / 120.0)
        if scene.crops:
            scenes.append(scene)
    return scenes


def match_pasted(boxes: list, crops: list[np.ndarray]) -> tuple[list[bool], int]:
    """One-to-one hits of detections on pasted faces; also the unmatched detections."""
    pairs = []
    for di, box in enumerate(boxes):
        b = np.asarray(box, dtype=np.float64)
        area = max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)
        for fi, crop in enumerate(crops):
            ix = max(0.0, min(b[2], crop[2]) - max(b[0], crop[0]))
            iy = max(0.0, min(b[3], crop[3]) - max(b[1], crop[1]))
            side = crop[2] - crop[0]
            if ix * iy >= 0.5 * area and 0.3 * side <= b[3] - b[1] <= 1.3 * side:
                pairs.append((-box_iou(b, crop), di, fi))
    hit = [False] * len(crops)
    used: set[int] = set()
    for _, di, fi in sorted(pairs):
        if di not in used and not hit[fi]:
            used.add(di)
            hit[fi] = True
    return hit, len(boxes) - len(used)


def evaluate_scenes(detect: Detect, scenes: list[Scene]) -> dict:
    """Per-face hits with yaw and height, false positives and per-frame times."""
    hits, yaws, heights, times, false_positives = [], [], [], [], 0
    for scene in scenes:
        start = time.perf_counter()
        boxes = detect(scene.image)
        times.append((time.perf_counter() - start) * 1000.0)
        found, extra = match_pasted(boxes, scene.crops)
        hits += found
        yaws += scene.yaws
        heights += scene.heights
        false_positives += extra
    return {
        "hits": np.array(hits),
        "yaws": np.array(yaws),
        "heights": np.array(heights),
        "false_positives_per_frame": false_positives / max(len(scenes), 1),
        "frames": len(scenes),
        **percentiles(times),
    }


# ----------------------------------------------------------------------------- grid
def grid_frame(data_dir: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Twelve helen_test faces in a 4x3 grid of a 1280x720 frame, and their patch boxes."""
    side = 220
    frame = background(np.random.default_rng(11), 1280, 720)
    boxes = []
    for index, patch in enumerate(face_patches(data_dir, 12, side)):
        x = 40 + (index % 4) * 310
        y = 15 + (index // 4) * 235
        frame[y : y + side, x : x + side] = patch
        boxes.append(np.array([x, y, x + side, y + side], dtype=np.float64))
    return frame, boxes


def shipped_estimator(settings: dict) -> HeadPoseEstimator:
    """Build the shipped estimator on the CPU, detecting inside each frame (deterministic)."""
    from headpose_ros.core.pipeline import HeadPoseEstimator

    return HeadPoseEstimator(
        config_from_flat(
            {
                "inference.device": "cpu",
                "tracking.deterministic_ids": True,
                "detector.asynchronous": False,
                **settings,
            }
        )
    )


def grid_through_estimator(frame: np.ndarray, boxes: list[np.ndarray], frames: int) -> list[int]:
    """Faces the shipped estimator reports per frame on the grid, over ``frames`` frames."""
    estimator = shipped_estimator({})
    counts = []
    for index in range(frames):
        result = estimator.estimate(frame, index * 33_333_333)
        found, _ = match_pasted([face.box for face in result.faces], boxes)
        counts.append(sum(found))
    estimator.close()
    return counts


# ----------------------------------------------------------------------------- detectors
def percentiles(times: list[float]) -> dict:
    """p50 and p95 of per-frame milliseconds."""
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def ours(settings: dict) -> Detect:
    """Build the product's detector from detector settings (boxes in landmark convention)."""
    detector = create_detector(DetectorConfig(**settings))
    return lambda image: [d.box for d in detector.detect(image)]


def through_estimator(settings: dict) -> Detect:
    """Run the product path on stills: the shipped estimator, its detector and network check.

    Each frame is a new sequence (detection inside the frame); its faces are the published
    ones, so false positives are those the network did not reject (``not_a_face``).
    """
    estimator = shipped_estimator(settings)

    def published(image: np.ndarray) -> list[tuple[float, float, float, float]]:
        estimator.reset()
        return [face.box for face in estimator.estimate(image, 1_000_000_000).faces]

    return published


def yunet(model: Path) -> Detect:
    """Build the YuNet peer (OpenCV's FaceDetectorYN; its own box convention)."""
    detector = cv2.FaceDetectorYN.create(str(model), "", (320, 320), 0.6)

    def run_yunet(image: np.ndarray) -> list[tuple[float, float, float, float]]:
        detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = detector.detect(image)
        if faces is None:
            return []
        return [(f[0], f[1], f[0] + f[2], f[1] + f[3]) for f in faces]

    return run_yunet


def detectors(shared: Path, names: list[str] | None) -> dict[str, Detect]:
    """Detector name -> callable(image) -> boxes; ours first, then the peers.

    Only the named ones (all when ``names`` is empty) are built: each holds MediaPipe graphs,
    and the estimator rows a whole model.
    """
    builders: dict[str, Callable[[], Detect]] = {
        "default (ours)": lambda: ours({}),
        "default through the estimator (published faces)": lambda: through_estimator({}),
        "largest regions mirrored (mirror_region_share 0.5)": lambda: ours(
            {"mirror_region_share": 0.5}
        ),
        "mirror_region_share 0.5 through the estimator": lambda: through_estimator(
            {"detector.mirror_region_share": 0.5}
        ),
        "min_score 0.3": lambda: ours({"min_score": 0.3}),
        "min_score 0.3 through the estimator": lambda: through_estimator(
            {"detector.min_score": 0.3}
        ),
        "full-range whole frame (old default)": lambda: ours(
            {"model_selection": 1, "smallest_face_px": 0}
        ),
        "short-range whole frame": lambda: ours({"smallest_face_px": 0}),
        "short-range tiles to 64 px": lambda: ours({"smallest_face_px": 64}),
        "short-range tiles to 32 px": lambda: ours({"smallest_face_px": 32}),
        "short-range tiles to 24 px": lambda: ours({"smallest_face_px": 24}),
    }
    yunet_path = shared / "peers" / "yunet" / "yunet_n_320_320.onnx"
    if yunet_path.is_file() and hasattr(cv2, "FaceDetectorYN"):
        builders["yunet (peer; own box)"] = lambda: yunet(yunet_path)
    return {name: build() for name, build in builders.items() if not names or name in names}


# ----------------------------------------------------------------------------- report
def recall_line(name: str, result: dict, mask: np.ndarray | None = None) -> str:
    """Recall overall and per |yaw| bin, as one table row."""
    hits, yaws = result["hits"], result["yaws"]
    if mask is not None:
        hits, yaws = hits[mask], yaws[mask]
    if not len(hits):
        return f"{name:40s} no faces"
    cells = [f"{hits.mean():7.1%} ({hits.sum()}/{len(hits)})"]
    for low, high in YAW_BINS:
        chosen = (yaws >= low) & (yaws < high)
        cells.append(f"{hits[chosen].mean():7.1%}" if chosen.any() else f"{'-':>7s}")
    return f"{name:40s} " + " ".join(cells)


def main() -> int:
    """Build the scenes, run every detector, print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared")
    parser.add_argument("--iou", type=float, default=0.4, help="300-W: IoU for a hit")
    parser.add_argument("--per-bin", type=int, default=200, help="AFLW faces per |yaw| bin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="300-W: first N images per split")
    parser.add_argument("--detectors", help="comma-separated names (default: all)")
    parser.add_argument("--skip-300w", action="store_true")
    parser.add_argument("--calibrate", action="store_true", help="fit box maps on helen_train")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    data_dir = args.shared / "data" / "300w_subset"
    aflw_dir = args.shared / "data" / "aflw_crops"
    if not data_dir.is_dir() or not aflw_dir.is_dir():
        print(f"SKIP: {data_dir} or {aflw_dir} not found (the data lives in ../shared)")
        return 0
    cv2.setNumThreads(2)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (others inflate times)")
    if args.calibrate:
        for selection in (0, 1):
            calibrate(data_dir, selection)
    found = detectors(args.shared, args.detectors.split(",") if args.detectors else None)
    report: dict = {"seed": args.seed, "detectors": list(found)}

    aflw = AflwFaces(aflw_dir)
    rng = np.random.default_rng(args.seed)
    sample = aflw.sample(rng, args.per_bin)
    scenes = {
        "pasted AFLW, 640x480, 24-192 px": paste_scenes(
            aflw, sample, rng, (640, 480), (3, 3), lambda r: float(r.choice(PASTED_HEIGHTS))
        ),
        "far 20-40 px, 640x480": paste_scenes(
            aflw, sample[: len(sample) // 2], rng, (640, 480), (8, 8), lambda r: r.uniform(20, 40)
        ),
        "far 20-40 px, 1280x720": paste_scenes(
            aflw, sample[len(sample) // 2 :], rng, (1280, 720), (8, 8), lambda r: r.uniform(20, 40)
        ),
        "groups of 12-16, 640x480, 40-64 px": paste_scenes(
            aflw,
            sample[: len(sample) // 2],
            rng,
            (640, 480),
            (12, 16),
            lambda r: r.uniform(40, 64),
        ),
        "groups of 12-16, 1280x720, 60-110 px": paste_scenes(
            aflw,
            sample[len(sample) // 2 :],
            rng,
            (1280, 720),
            (12, 16),
            lambda r: r.uniform(60, 110),
        ),
    }
    grid, grid_boxes = grid_frame(data_dir)
    splits = {}
    if not args.skip_300w:
        splits = {
            s: split_items(data_dir, s) for s in ("helen_test", "afw", "lfpw_train", "helen_train")
        }
        if args.limit:
            splits = {split: items[: args.limit] for split, items in splits.items()}

    header = f"{'scene':40s} {'recall (found/faces)':>20s} " + " ".join(
        f"{n:>7s}" for n in YAW_NAMES
    )
    for name, detect in found.items():
        entry: dict = {}
        print(f"\n##### {name}")
        if splits:
            print(
                f"{'300-W split':12s} {'faces':>5s} {'recall':>7s} {'p50 ms':>7s} {'p95 ms':>7s}"
            )
            for split, items in splits.items():
                figures = evaluate_split(detect, items, args.iou)
                entry[split] = figures
                print(
                    f"{split:12s} {figures['faces']:5d} "
                    f"{figures['found'] / figures['faces']:7.1%} "
                    f"{figures['p50_ms']:7.2f} {figures['p95_ms']:7.2f}"
                )
        print(header + f" {'FP/frame':>8s} {'p50 ms':>7s} {'p95 ms':>7s}")
        for scene_name, frames in scenes.items():
            result = evaluate_scenes(detect, frames)
            entry[scene_name] = {
                "recall": float(result["hits"].mean()),
                "faces": int(len(result["hits"])),
                "by_yaw": {
                    n: float(result["hits"][(result["yaws"] >= lo) & (result["yaws"] < hi)].mean())
                    for n, (lo, hi) in zip(YAW_NAMES, YAW_BINS, strict=True)
                },
                "false_positives_per_frame": result["false_positives_per_frame"],
                "p50_ms": result["p50_ms"],
                "p95_ms": result["p95_ms"],
            }
            print(
                recall_line(scene_name, result)
                + f" {result['false_positives_per_frame']:8.2f} {result['p50_ms']:7.1f}"
                f" {result['p95_ms']:7.1f}"
            )
            if scene_name.startswith("pasted"):
                for low, high in ((0, MIN_HEIGHT), (MIN_HEIGHT, 10_000)):
                    mask = (result["heights"] >= low) & (result["heights"] < high)
                    label = f"  faces {'< 24' if low == 0 else '>= 24'} px high"
                    print(recall_line(label, result, mask))
                    entry[scene_name][label.strip()] = (
                        float(result["hits"][mask].mean()) if mask.any() else None
                    )
                for height in PASTED_HEIGHTS:
                    mask = np.isclose(result["heights"], height, atol=0.5)
                    print(recall_line(f"  {height} px high", result, mask))
            if scene_name.startswith("far"):
                mask = result["heights"] >= MIN_HEIGHT
                print(recall_line("  faces >= 24 px high", result, mask))
                entry[scene_name]["faces >= 24 px high"] = float(result["hits"][mask].mean())
        start = time.perf_counter()
        grid_found, _ = match_pasted(detect(grid), grid_boxes)
        grid_ms = (time.perf_counter() - start) * 1000.0
        entry["grid of 12, 1280x720"] = sum(grid_found)
        print(f"grid of 12 helen_test faces, 1280x720: {sum(grid_found)} of 12 ({grid_ms:.0f} ms)")
        report[name] = entry
    counts = grid_through_estimator(grid, grid_boxes, 10)
    report["grid through the estimator (faces per frame)"] = counts
    print(f"\ngrid of 12 through HeadPoseEstimator (default settings), faces per frame: {counts}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
