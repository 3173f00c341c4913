"""``headpose_run``: the estimator on an image, a folder of images, a video file or a camera.

Writes ``results.jsonl`` (one line per frame), ``results.csv`` (one row per face, or one row
with the skip reason for a frame without faces), annotated images (``annotated/``) or an
annotated video (``annotated.mp4``), and ``summary.json``; prints the summary at the end.
Images of a folder are unrelated photos by default (tracking restarts for each); pass
``--sequence`` when they are the frames of one video. When a 300-W style ``.pts`` file sits
beside an image, the landmark error (NME, inter-ocular) is reported too.

Example: ``headpose_run path/to/video.mp4 --output-dir out --intrinsics 600,600,320,240``
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from headpose_ros.core.config import config_to_flat
from headpose_ros.core.image_codec import ImageDecodeError, decode_compressed_image
from headpose_ros.core.metrics import landmark_normaliser, nme_per_face
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.core.results import FrameResult
from headpose_ros.core.visualization import draw_frame
from headpose_ros.tools.annotations import annotated_face, annotation_for, landmark_box
from headpose_ros.tools.common import (
    ResultWriter,
    add_estimator_arguments,
    camera_from_arguments,
    config_from_arguments,
    tool_main,
    tool_parser,
)

__all__ = ["main", "nme_of_frame"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class InputFrame:
    """One frame read from the source; ``image`` is None when it could not be read."""

    index: int
    name: str
    image: np.ndarray | None
    timestamp_ns: int
    error: str = ""
    path: Path | None = None


def _image_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _read_images(files: list[Path], fps: float, max_pixels: int) -> Iterator[InputFrame]:
    """Image files, decoded only after their header's size passed ``max_pixels``."""
    for index, file in enumerate(files):
        image, error = None, ""
        try:
            image = decode_compressed_image(file.suffix, file.read_bytes(), max_pixels)
        except (ImageDecodeError, OSError) as problem:
            error = f"cannot decode {file.name}: {problem}"
        yield InputFrame(index, file.name, image, int(round(index * 1e9 / fps)), error, file)


def _read_video(capture: cv2.VideoCapture, name: str, max_frames: int) -> Iterator[InputFrame]:
    """Frames of a video or camera; timestamps from the container (or the frame rate)."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    index = 0
    while max_frames <= 0 or index < max_frames:
        ok, image = capture.read()
        if not ok:
            break
        position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
        timestamp = (
            int(round(position_ms * 1e6))
            if position_ms and position_ms > 0
            else int(round(index * 1e9 / fps))
        )
        yield InputFrame(index, f"{name}#{index}", image, timestamp)
        index += 1
    capture.release()


def nme_of_frame(frame: FrameResult, annotation: np.ndarray) -> float | None:
    """Inter-ocular NME of the annotated face; ``None`` when no face overlaps the annotation.

    The face is matched to the annotation by box overlap (:func:`annotated_face`), so when the
    annotated face is missed another face in the image is not scored in its place.
    """
    if annotation.shape != (68, 2):
        return None
    candidates = [f for f in frame.faces if f.landmarks is not None]
    face = annotated_face(candidates, landmark_box(annotation))
    if face is None:
        return None
    normaliser = landmark_normaliser(annotation[None], "interocular")
    return float(nme_per_face(face.landmarks[None], annotation[None], None, normaliser)[0])


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = tool_parser("headpose_run", __doc__)
    parser.add_argument(
        "source",
        nargs="?",
        help="image file, folder of images, video file, or camera index (0, 1, ...)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("headpose_output"), help="where results go"
    )
    parser.add_argument(
        "--no-annotate", action="store_true", help="do not write annotated images/video"
    )
    parser.add_argument(
        "--sequence", action="store_true", help="a folder's images are consecutive video frames"
    )
    parser.add_argument(
        "--fps", type=float, default=30.0, help="frame rate assumed for image sequences"
    )
    parser.add_argument(
        "--max-frames", type=int, default=0, help="stop after this many frames (0 = all)"
    )
    add_estimator_arguments(parser)
    return parser


def _frames(
    args: argparse.Namespace, max_pixels: int
) -> tuple[Iterator[InputFrame], int | None, bool, float]:
    """Frame iterator, frame count if known, whether frames are a sequence, and the frame rate.

    A video or camera whose frames exceed ``max_pixels`` is refused before the first frame.
    """
    source = str(args.source)
    path = Path(source)
    if source.isdigit() and not path.exists():
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise FileNotFoundError(f"camera {source} cannot be opened")
        _check_video_size(capture, f"camera {source}", max_pixels)
        return (
            _read_video(capture, f"camera{source}", args.max_frames),
            None,
            True,
            capture.get(cv2.CAP_PROP_FPS) or 30.0,
        )
    if path.is_dir():
        files = _image_files(path)
        if args.max_frames > 0:
            files = files[: args.max_frames]
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return _read_images(files, args.fps, max_pixels), len(files), args.sequence, args.fps
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_images([path], args.fps, max_pixels), 1, False, args.fps
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f"{path} is neither an image nor a video OpenCV can open")
    _check_video_size(capture, str(path), max_pixels)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if count and args.max_frames > 0:
        count = min(count, args.max_frames)
    return (
        _read_video(capture, path.name, args.max_frames),
        count,
        True,
        capture.get(cv2.CAP_PROP_FPS) or 30.0,
    )


def _check_video_size(capture: cv2.VideoCapture, name: str, max_pixels: int) -> None:
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > max_pixels:
        capture.release()
        raise ImageDecodeError(
            f"{name} has {width}x{height} frames, above max_image_pixels = {max_pixels}",
            "image_too_large",
        )


def run(args: argparse.Namespace) -> dict:
    """Process the source; return the summary."""
    config = config_from_arguments(args)
    camera = camera_from_arguments(args)
    frames, total, sequence, fps = _frames(args, config.max_image_pixels)
    estimator = HeadPoseEstimator(config)
    writer = ResultWriter(args.output_dir)
    annotated_dir = args.output_dir / "annotated"
    video: cv2.VideoWriter | None = None
    errors: list[float | None] = []  # per annotated image; None = annotated face missed
    try:
        for item in tqdm(frames, total=total, unit="frame", desc="headpose"):
            if item.image is None:
                writer.write_unreadable(item.index, item.name, item.timestamp_ns, item.error)
                continue
            if not sequence:
                estimator.reset()
            frame = estimator.estimate(item.image, item.timestamp_ns, camera)
            annotation = annotation_for(item.path) if item.path is not None else None
            extra = {}
            if annotation is not None:
                extra["nme"] = nme_of_frame(frame, annotation)
                errors.append(extra["nme"])
            writer.write(item.index, item.name, frame, extra)
            if args.no_annotate:
                continue
            canvas = draw_frame(item.image, frame)
            if sequence and item.path is None:
                if video is None:
                    video = cv2.VideoWriter(
                        str(args.output_dir / "annotated.mp4"),
                        cv2.VideoWriter_fourcc(*"mp4v"),
                        fps,
                        (canvas.shape[1], canvas.shape[0]),
                    )
                video.write(canvas)
            else:
                annotated_dir.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(annotated_dir / f"{Path(item.name).stem}.jpg"), canvas)
    finally:
        if video is not None:
            video.release()
        estimator.close()
    scored = [e for e in errors if e is not None]
    if errors:
        writer.extra["landmark_nme_interocular"] = {
            "annotated": len(errors),
            "faces": len(scored),
            "missed": len(errors) - len(scored),
            "mean": round(float(np.mean(scored)), 4) if scored else None,
            "median": round(float(np.median(scored)), 4) if scored else None,
        }
    writer.extra["device"] = estimator.device
    writer.extra["precision"] = estimator.precision
    writer.extra["settings"] = config_to_flat(config)
    writer.extra["model"] = str(estimator.model.folder)
    summary = writer.close(estimator.counters)
    summary["outputs"]["annotated"] = str(
        args.output_dir / ("annotated.mp4" if video is not None else "annotated")
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit code 2 for bad settings, model or input."""
    return tool_main(build_parser(), argv, "source", run, (ImageDecodeError,))


if __name__ == "__main__":
    sys.exit(main())
