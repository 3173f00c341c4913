"""What the offline tools share: settings from the command line, result rows, the summary.

Every frame a tool reads becomes exactly one JSON line (and at least one CSV row): either its
faces, or an explicit skip reason (``unreadable_image``, the estimator's frame skip reasons, or
``no_faces``), so a run's output accounts for every input frame.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from headpose_ros.core.config import ConfigError, EstimatorConfig, config_from_flat, iter_settings
from headpose_ros.core.manifest import ModelFileError
from headpose_ros.core.metric_pose import (
    DISTORTION_MODELS,
    CameraModel,
    IntrinsicsError,
    camera_from_intrinsics,
)
from headpose_ros.core.results import DETECTION_COUNTERS, STAGES, FaceResult, FrameResult

__all__ = [
    "CSV_FIELDS",
    "ResultWriter",
    "add_estimator_arguments",
    "camera_from_arguments",
    "config_from_arguments",
    "face_record",
    "frame_record",
    "frame_status",
    "print_settings",
    "plot_timeline",
    "print_summary",
    "tool_main",
    "tool_parser",
]

CSV_FIELDS = (
    "frame",
    "source",
    "timestamp_ns",
    "status",
    "track_id",
    "score",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "yaw_deg",
    "pitch_deg",
    "roll_deg",
    "x_m",
    "y_m",
    "z_m",
    "metric",
    "attention",
    "mean_visibility",
    "cut_by_border",
    "total_ms",
)


def tool_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Argument parser of one tool; the caller adds its input options first."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def tool_main(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    required: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    errors: tuple[type[Exception], ...] = (),
) -> int:
    """Console entry shared by the tools: exit 0 with a summary, or 2 with a one-line reason.

    ``required`` names the positional input (optional for ``--list-settings``); setup
    problems (settings, model files, intrinsics, missing input, plus ``errors``) are reported
    without a traceback because they are the user's to fix, not bugs.
    """
    args = parser.parse_args(argv)
    if args.list_settings:
        print_settings()
        return 0
    if getattr(args, required) is None:
        parser.error(f"{required} is required")
    try:
        summary = run(args)
    except (ConfigError, ModelFileError, IntrinsicsError, FileNotFoundError, *errors) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


def add_estimator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the settings options every tool takes (same names as the node's parameters)."""
    group = parser.add_argument_group("estimator settings")
    group.add_argument(
        "--config", type=Path, help="YAML file of settings (nested sections or dotted names)"
    )
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one setting, e.g. --set inference.device=cpu (see --list-settings)",
    )
    group.add_argument(
        "--model-dir", help="model folder (manifest.json); default: the shipped model"
    )
    group.add_argument("--encoder-only", action="store_true", help="head pose only (no landmarks)")
    group.add_argument("--intrinsics", help="fx,fy,cx,cy of the camera, for metric positions")
    group.add_argument(
        "--distortion", help="distortion coefficients: k1,k2,p1,p2[,k3] or 8 (rational) or 4"
    )
    group.add_argument(
        "--distortion-model",
        choices=sorted(DISTORTION_MODELS),
        help="how --distortion is read (default: plumb_bob, rational_polynomial for 8 values)",
    )
    group.add_argument("--list-settings", action="store_true", help="print every setting and exit")


def config_from_arguments(args: argparse.Namespace) -> EstimatorConfig:
    """Build settings: defaults (deterministic ids and detection: reproducible), file, options."""
    values: dict[str, Any] = {"tracking.deterministic_ids": True, "detector.asynchronous": False}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must hold a mapping of settings")
        values.update(loaded)  # nested sections; config_from_flat flattens them
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r}")
        values[name.strip()] = value
    if args.model_dir:
        values["inference.model_dir"] = args.model_dir
    if args.encoder_only:
        values["inference.encoder_only"] = True
    return config_from_flat(values)


def print_settings() -> None:
    """Every setting with its default, range and description (for --list-settings)."""
    for spec in iter_settings():
        allowed = f" choices {list(spec.choices)}" if spec.choices else ""
        if spec.low is not None or spec.high is not None:
            allowed = f" range [{spec.low}, {spec.high}]"
        print(
            f"{spec.name} = {spec.default!r} ({spec.type.__name__}{allowed})\n"
            f"    {spec.description}"
        )


def camera_from_arguments(args: argparse.Namespace) -> CameraModel | None:
    """Intrinsics from --intrinsics/--distortion; None when not given."""
    if not args.intrinsics:
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in args.intrinsics.split(","))
        distortion = [float(v) for v in args.distortion.split(",")] if args.distortion else None
    except ValueError as error:
        raise IntrinsicsError(f"--intrinsics needs fx,fy,cx,cy numbers: {error}") from error
    return camera_from_intrinsics(
        np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]),
        distortion,
        args.distortion_model,
    )


def _round(values: np.ndarray, digits: int = 3) -> list:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def face_record(face: FaceResult) -> dict[str, Any]:
    """JSON-ready dict of one face (angles in degrees and radians, landmarks in pixels)."""
    return {
        "track_id": face.track_id,
        "box": _round(face.box, 2),
        "score": round(face.score, 4),
        "yaw": round(face.yaw, 5),
        "pitch": round(face.pitch, 5),
        "roll": round(face.roll, 5),
        "yaw_deg": round(float(np.rad2deg(face.yaw)), 2),
        "pitch_deg": round(float(np.rad2deg(face.pitch)), 2),
        "roll_deg": round(float(np.rad2deg(face.roll)), 2),
        "rotation": _round(face.rotation, 5),
        "position": _round(face.position, 4),
        "position_is_metric": face.metric,
        "pose_note": face.pose_note,
        "reprojection_error_px": None
        if not np.isfinite(face.reprojection_error_px)
        else round(face.reprojection_error_px, 3),
        "attention": round(face.attention, 4),
        "landmarks": None if face.landmarks is None else _round(face.landmarks, 2),
        "visibility": None if face.visibility is None else _round(face.visibility, 3),
        "source": face.source,
        "cut_by_border": face.cut_by_border,
    }


def frame_status(frame: FrameResult) -> str:
    """Return "ok", "no_faces", or the skip reason."""
    if frame.skip_reason:
        return frame.skip_reason
    return "ok" if frame.faces else "no_faces"


def frame_record(index: int, source: str, frame: FrameResult) -> dict[str, Any]:
    """JSON-ready dict of one frame."""
    return {
        "frame": index,
        "source": source,
        "timestamp_ns": frame.timestamp_ns,
        "status": frame_status(frame),
        "skip_detail": frame.skip_detail,
        "events": frame.events,
        "image_size": [frame.image_width, frame.image_height],
        "detector_ran": frame.detector_ran,
        "timings_ms": {k: round(v, 3) for k, v in frame.timings_ms.items()},
        "faces": [face_record(face) for face in frame.faces],
    }


class ResultWriter:
    """Writes results.jsonl and results.csv and keeps the figures for the end-of-run summary."""

    def __init__(self, output_dir: Path) -> None:
        """Open both files in ``output_dir`` (created if needed)."""
        output_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir = output_dir
        self.jsonl_path = output_dir / "results.jsonl"
        self.csv_path = output_dir / "results.csv"
        self._jsonl: TextIO = open(self.jsonl_path, "w")  # noqa: SIM115 - closed in close()
        self._csv_file: TextIO = open(self.csv_path, "w", newline="")  # noqa: SIM115
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_FIELDS)
        self._csv.writeheader()
        self.status = Counter[str]()
        self.faces = 0
        self.timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
        self.extra: dict[str, Any] = {}
        # (seconds, track id, yaw, pitch, roll in degrees, attention) for the timeline plot
        self._timeline: list[tuple[float, str, float, float, float, float]] = []

    def write(
        self, index: int, source: str, frame: FrameResult, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record one frame (``extra`` keys are added to its JSON line); returns the record."""
        record = {**frame_record(index, source, frame), **(extra or {})}
        self._jsonl.write(json.dumps(record) + "\n")
        self.status[record["status"]] += 1
        self.faces += len(frame.faces)
        if not frame.skip_reason:
            for stage in STAGES:
                self.timings[stage].append(frame.timings_ms.get(stage, 0.0))
        base = {
            "frame": index,
            "source": source,
            "timestamp_ns": frame.timestamp_ns,
            "status": record["status"],
        }
        total = round(frame.timings_ms.get("total", 0.0), 3)
        for face in frame.faces:
            angles = np.rad2deg([face.yaw, face.pitch, face.roll])
            self._timeline.append(
                (frame.timestamp_ns * 1e-9, face.track_id, *angles, face.attention)
            )
        if not frame.faces:
            self._csv.writerow({**base, "total_ms": total})
        for face in frame.faces:
            self._csv.writerow(
                {
                    **base,
                    "track_id": face.track_id,
                    "score": round(face.score, 4),
                    **dict(
                        zip(
                            ("box_x0", "box_y0", "box_x1", "box_y1"),
                            _round(face.box, 2),
                            strict=True,
                        )
                    ),
                    "yaw_deg": round(float(np.rad2deg(face.yaw)), 2),
                    "pitch_deg": round(float(np.rad2deg(face.pitch)), 2),
                    "roll_deg": round(float(np.rad2deg(face.roll)), 2),
                    **dict(zip(("x_m", "y_m", "z_m"), _round(face.position, 4), strict=True)),
                    "metric": face.metric,
                    "attention": round(face.attention, 4),
                    "mean_visibility": ""
                    if face.visibility is None
                    else round(float(face.visibility.mean()), 3),
                    "cut_by_border": face.cut_by_border,
                    "total_ms": total,
                }
            )
        return record

    def write_unreadable(self, index: int, source: str, timestamp_ns: int, detail: str) -> None:
        """Record a frame that could not even be read or decoded: one row, with the reason."""
        frame = FrameResult(
            timestamp_ns=timestamp_ns,
            image_width=0,
            image_height=0,
            skip_reason="unreadable_image",
            skip_detail=detail,
        )
        self.write(index, source, frame)

    def summary(self, counters: Counter[str] | None = None) -> dict[str, Any]:
        """Frames by status, faces, p50/p95 per stage (ms) and the estimator's counters."""
        latency = {
            stage: {
                "p50": round(float(np.percentile(v, 50)), 3),
                "p95": round(float(np.percentile(v, 95)), 3),
            }
            for stage, v in self.timings.items()
            if v
        }
        return {
            "frames": sum(self.status.values()),
            "frames_by_status": dict(self.status),
            "faces": self.faces,
            "latency_ms": latency,
            "estimator_counters": dict(counters or {}),
            "outputs": {"jsonl": str(self.jsonl_path), "csv": str(self.csv_path)},
            **self.extra,
        }

    def close(self, counters: Counter[str] | None = None) -> dict[str, Any]:
        """Close the files, write summary.json next to them and return the summary."""
        self._jsonl.close()
        self._csv_file.close()
        if self._timeline:
            path = self.output_dir / "timeline.png"
            plot_timeline(self._timeline, path)
            self.extra.setdefault("plots", {})["timeline"] = str(path)
        summary = self.summary(counters)
        (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def plot_timeline(rows: list[tuple[float, str, float, float, float, float]], path: Path) -> None:
    """Yaw, pitch, roll and attention over time, one line per track, saved as a PNG.

    The quickest way to see whether a run makes sense: tracks that flicker, angles that jump
    or an attention score that never moves show up at a glance.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    start = min(row[0] for row in rows)
    figure, axes = plt.subplots(4, 1, figsize=(10, 8), sharex=True)
    labels = ("yaw (deg)", "pitch (deg)", "roll (deg)", "attention")
    for track in sorted({row[1] for row in rows}):
        mine = np.array([(row[0] - start, *row[2:]) for row in rows if row[1] == track])
        for axis, column in zip(axes, range(1, 5), strict=True):
            axis.plot(mine[:, 0], mine[:, column], ".-", markersize=3, label=f"id {track}")
    for axis, label in zip(axes, labels, strict=True):
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[3].set_ylim(-0.05, 1.05)
    axes[3].set_xlabel("time since the first face (s)")
    axes[0].legend(loc="upper right", fontsize="small", ncol=4)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def print_summary(summary: dict[str, Any]) -> None:
    """Human-readable end-of-run summary."""
    print(f"frames: {summary['frames']}  faces: {summary['faces']}")
    for status, count in sorted(summary["frames_by_status"].items()):
        print(f"  {status:24s} {count}")
    total = summary["latency_ms"].get("total")
    if total:
        print(f"latency per frame: p50 {total['p50']:.2f} ms, p95 {total['p95']:.2f} ms")
    counters = summary["estimator_counters"]
    print("detection: " + ", ".join(f"{n} {counters.get(n, 0)}" for n in DETECTION_COUNTERS))
    events = {
        k: v for k, v in summary["estimator_counters"].items() if k.startswith(("event:", "skip:"))
    }
    for name, count in sorted(events.items()):
        print(f"  {name:32s} {count}")
    for key, value in summary.items():
        if key not in (
            "frames",
            "frames_by_status",
            "faces",
            "latency_ms",
            "estimator_counters",
            "outputs",
            "settings",
        ):
            print(f"{key}: {json.dumps(value)}")
    print("outputs: " + ", ".join(f"{k}={v}" for k, v in summary["outputs"].items()))
