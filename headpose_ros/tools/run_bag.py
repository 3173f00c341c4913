"""``headpose_bag``: run the estimator over a rosbag2 (sqlite3 .db3 or .mcap) without ROS.

Reads a sensor_msgs/Image or CompressedImage topic (and the latest sensor_msgs/CameraInfo for
metric poses), and writes a new bag holding every input topic plus ``<prefix>/faces``
(headpose_msgs/FaceArray), ``<prefix>/poses`` (geometry_msgs/PoseArray) and
``<prefix>/markers`` (visualization_msgs/MarkerArray), all stamped with the input image's
header and written at the image's bag time, so the new bag replays into rviz in sync. A report
folder gets results.jsonl/csv (one line per image message, with a skip reason when one could
not be used), summary.json and report.md. With ``--gt-topic`` (a FaceArray with landmarks and
angles, or a PoseStamped), accuracy against it is computed with ``headpose_ros.core.metrics``.

Example: ``headpose_bag recording/ --output recording_headpose --gt-topic /ground_truth/faces``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from tqdm import tqdm

from headpose_ros.core.config import config_to_flat
from headpose_ros.core.geometry import matrix_to_euler, quaternion_to_rotation
from headpose_ros.core.image_codec import ImageDecodeError
from headpose_ros.core.metric_pose import CameraModel, IntrinsicsError
from headpose_ros.core.metrics import landmark_normaliser, nme_per_face, pose_errors
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.core.results import FaceResult, FrameResult
from headpose_ros.messages import (
    box_from_message,
    camera_from_info,
    frame_messages,
    image_from_message,
    rosbags_factory,
    stamp_ns,
)
from headpose_ros.tools.annotations import annotated_face, landmark_box
from headpose_ros.tools.bag_messages import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    FACE_ARRAY,
    IMAGE,
    MARKER_ARRAY,
    POSE_ARRAY,
    POSE_STAMPED,
    build_typestore,
)
from headpose_ros.tools.common import (
    ResultWriter,
    add_estimator_arguments,
    camera_from_arguments,
    config_from_arguments,
    tool_main,
    tool_parser,
)

__all__ = ["main", "run"]


#: The output topics written for every image (under ``--output-prefix``) and their types.
_OUTPUT_TYPES = {"faces": FACE_ARRAY, "poses": POSE_ARRAY, "markers": MARKER_ARRAY}


class BagToolError(RuntimeError):
    """The bag or the requested topics cannot be used; the message says why."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = tool_parser("headpose_bag", __doc__)
    parser.add_argument(
        "bag",
        nargs="?",
        type=Path,
        help="input rosbag2 folder (or a single .mcap/.db3 file's folder)",
    )
    parser.add_argument("--output", type=Path, help="output bag folder (default: <bag>_headpose)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output bag and report"
    )
    parser.add_argument(
        "--storage",
        choices=("same", "sqlite3", "mcap"),
        default="same",
        help="output storage format",
    )
    parser.add_argument(
        "--image-topic", help="image topic (default: the first Image/CompressedImage topic)"
    )
    parser.add_argument(
        "--camera-info-topic", help="CameraInfo topic (default: the one beside the image topic)"
    )
    parser.add_argument(
        "--output-prefix", default="/headpose", help="namespace of the output topics"
    )
    parser.add_argument(
        "--gt-topic", help="ground truth: headpose_msgs/FaceArray or geometry_msgs/PoseStamped"
    )
    parser.add_argument("--report-dir", type=Path, help="report folder (default: <output>_report)")
    add_estimator_arguments(parser)
    return parser


def _pick_topics(
    connections: list[Any], args: argparse.Namespace
) -> tuple[Any, Any | None, Any | None]:
    """Image connection, camera-info connection and ground-truth connection."""
    by_topic = {c.topic: c for c in connections}
    images = sorted(
        (c for c in connections if c.msgtype in (IMAGE, COMPRESSED_IMAGE)), key=lambda c: c.topic
    )
    if args.image_topic:
        image = by_topic.get(args.image_topic)
        if image is None or image.msgtype not in (IMAGE, COMPRESSED_IMAGE):
            raise BagToolError(
                f"{args.image_topic} is not an Image/CompressedImage topic of the bag "
                f"({sorted(by_topic)})"
            )
    elif images:
        image = images[0]
    else:
        raise BagToolError(
            f"the bag has no sensor_msgs Image or CompressedImage topic ({sorted(by_topic)})"
        )
    infos = [c for c in connections if c.msgtype == CAMERA_INFO]
    info = None
    if args.camera_info_topic:
        info = by_topic.get(args.camera_info_topic)
        if info is None or info.msgtype != CAMERA_INFO:
            raise BagToolError(f"{args.camera_info_topic} is not a CameraInfo topic of the bag")
    elif infos:
        parent = image.topic.rsplit("/", 2)[0]
        info = next((c for c in infos if c.topic.startswith(parent)), infos[0])
    gt = None
    if args.gt_topic:
        gt = by_topic.get(args.gt_topic)
        if gt is None or gt.msgtype not in (FACE_ARRAY, POSE_STAMPED):
            raise BagToolError(
                f"{args.gt_topic} is not a FaceArray or PoseStamped topic of the bag"
            )
    return image, info, gt


class GroundTruth:
    """Ground-truth messages and results by stamp, paired up at the end of the run.

    Pairing waits for the end because a ground-truth message may be recorded after the image
    it describes.
    """

    def __init__(self) -> None:
        """Start empty."""
        # stamp -> [(annotated box or None, landmarks or None, angles in degrees)]
        self._truth: dict[int, list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray]]] = {}
        self._results: dict[int, list[FaceResult]] = {}

    def add(self, msg: Any, msgtype: str) -> None:
        """Remember one ground-truth message: per face its box, landmarks and angles.

        A FaceArray face is found again by its landmarks' box, or its own box when it has no
        landmarks; a PoseStamped (no box) stands for the largest face.
        """
        if msgtype == POSE_STAMPED:
            q = msg.pose.orientation
            angles = np.rad2deg(matrix_to_euler(quaternion_to_rotation(q.x, q.y, q.z, q.w)))
            self._truth[stamp_ns(msg.header)] = [(None, None, angles)]
            return
        faces = []
        for face in msg.faces:
            points = (
                np.array([[p.x, p.y] for p in face.landmarks]) if len(face.landmarks) else None
            )
            box = landmark_box(points) if points is not None else box_from_message(face.box)
            faces.append((box, points, np.rad2deg([face.yaw, face.pitch, face.roll])))
        self._truth[stamp_ns(msg.header)] = faces

    def record(self, frame: FrameResult) -> None:
        """Keep a processed frame's faces for pairing."""
        self._results[frame.timestamp_ns] = frame.faces

    def metrics(self) -> dict[str, Any]:
        """NME (inter-ocular) and pose MAE of the face matched to each ground-truth face.

        Matched by box overlap (:func:`annotated_face`): a ground-truth face that no estimated
        face overlaps is counted as unmatched, never scored against another face.
        """
        landmark_pairs, angle_pairs, unmatched = [], [], 0
        for stamp, truth in sorted(self._truth.items()):
            faces = self._results.get(stamp, [])
            for box, points, angles in truth:
                if box is None:
                    face = max(
                        faces,
                        key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]),
                        default=None,
                    )
                else:
                    face = annotated_face(faces, box)
                if face is None:
                    unmatched += 1
                    continue
                angle_pairs.append((np.rad2deg([face.yaw, face.pitch, face.roll]), angles))
                if (
                    points is not None
                    and face.landmarks is not None
                    and points.shape == face.landmarks.shape
                ):
                    landmark_pairs.append((face.landmarks, points))
        result: dict[str, Any] = {
            "ground_truth_faces": sum(map(len, self._truth.values())),
            "unmatched": unmatched,
        }
        if landmark_pairs:
            pred, gt = (np.stack(v) for v in zip(*landmark_pairs, strict=True))
            nme = nme_per_face(pred, gt, None, landmark_normaliser(gt, "interocular"))
            result["landmark_nme_interocular"] = {
                "faces": len(nme),
                "mean": round(float(np.nanmean(nme)), 4),
            }
        if angle_pairs:
            pred, gt = (np.stack(v) for v in zip(*angle_pairs, strict=True))
            result["pose_mae_deg"] = {k: round(v, 3) for k, v in pose_errors(pred, gt).mae.items()}
            result["pose_mae_deg"]["faces"] = len(pred)
        return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Process the bag; return the summary (also written to the report folder)."""
    config = config_from_arguments(args)
    fixed_camera = camera_from_arguments(args)
    output = args.output or args.bag.with_name(args.bag.name + "_headpose")
    report_dir = args.report_dir or output.with_name(output.name + "_report")
    for path in (output, report_dir):
        if path.exists():
            if not args.overwrite:
                raise BagToolError(f"{path} exists (use --overwrite to replace it)")
            shutil.rmtree(path)
    estimator = HeadPoseEstimator(config)
    writer = ResultWriter(report_dir)
    ground_truth = GroundTruth()
    with Reader(args.bag) as reader:
        store = build_typestore(reader.connections)
        make = rosbags_factory(store)
        image_conn, info_conn, gt_conn = _pick_topics(reader.connections, args)
        storage = args.storage if args.storage != "same" else _storage_of(args.bag)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        camera = fixed_camera
        no_camera = "" if fixed_camera is not None else "no camera_info (yet)"
        shown_ids: set[str] = set()
        index = 0
        # Bag format 8 is read by every ROS 2 release from Iron on (9 needs Jazzy or later).
        with Writer(output, version=8, storage_plugin=plugin) as bag_out:
            copies = {}
            for conn in reader.connections:
                known = conn.msgtype in store.fielddefs
                copies[conn.id] = bag_out.add_connection(
                    conn.topic,
                    conn.msgtype,
                    typestore=store if known else None,
                    msgdef=None if known else conn.msgdef.data,
                    rihs01=None if known else conn.digest,
                    offered_qos_profiles=conn.ext.offered_qos_profiles,
                )
            prefix = args.output_prefix.rstrip("/")
            outputs = {
                topic: (
                    bag_out.add_connection(f"{prefix}/{topic}", msgtype, typestore=store),
                    msgtype,
                )
                for topic, msgtype in _OUTPUT_TYPES.items()
            }
            total = image_conn.msgcount or None
            progress = tqdm(total=total, unit="image", desc="headpose_bag")
            for conn, bag_time, raw in reader.messages():
                bag_out.write(copies[conn.id], bag_time, raw)
                if info_conn is not None and conn.id == info_conn.id and fixed_camera is None:
                    info = store.deserialize_cdr(raw, CAMERA_INFO)
                    camera, no_camera = _camera_or_reason(info, estimator)
                elif gt_conn is not None and conn.id == gt_conn.id:
                    ground_truth.add(store.deserialize_cdr(raw, conn.msgtype), conn.msgtype)
                if conn.id != image_conn.id:
                    continue
                progress.update(1)
                try:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    image = image_from_message(msg, config.max_image_pixels)
                except (ImageDecodeError, ValueError, AssertionError, IndexError) as error:
                    estimator.counters["skip:unreadable_image"] += 1
                    estimator.counters[f"unreadable:{getattr(error, 'reason', 'message')}"] += 1
                    writer.write_unreadable(index, conn.topic, bag_time, str(error))
                    index += 1
                    continue
                stamp = stamp_ns(msg.header) or bag_time
                frame = estimator.estimate(image, stamp, camera)
                writer.write(index, conn.topic, frame, {"no_intrinsics_because": no_camera})
                index += 1
                if frame.skip_reason:
                    continue
                ground_truth.record(frame)
                messages = frame_messages(
                    make,
                    msg.header,
                    frame,
                    estimator.manifest.landmark_scheme,
                    frame.camera,
                    shown_ids,
                    topics=outputs.keys(),
                )
                shown_ids = messages.shown_ids
                for topic, message in messages.topics.items():
                    connection, msgtype = outputs[topic]
                    bag_out.write(connection, bag_time, store.serialize_cdr(message, msgtype))
            progress.close()
    estimator.close()
    writer.extra.update(
        {
            "input_bag": str(args.bag),
            "output_bag": str(output),
            "storage": storage,
            "image_topic": image_conn.topic,
            "camera_info_topic": info_conn.topic if info_conn is not None else None,
            "output_topics": [f"{prefix}/{topic}" for topic in _OUTPUT_TYPES],
            "device": estimator.device,
            "precision": estimator.precision,
            "settings": config_to_flat(config),
            "model": str(estimator.model.folder),
        }
    )
    if gt_conn is not None:
        writer.extra["ground_truth"] = {"topic": gt_conn.topic, **ground_truth.metrics()}
    summary = writer.close(estimator.counters)
    _write_markdown(report_dir / "report.md", summary)
    return summary


def _storage_of(bag: Path) -> str:
    """Storage format of the input bag ("sqlite3" or "mcap"), from its file names."""
    return "mcap" if any(path.suffix == ".mcap" for path in bag.iterdir()) else "sqlite3"


def _camera_or_reason(info: Any, estimator: HeadPoseEstimator) -> tuple[CameraModel | None, str]:
    """Latest CameraInfo as intrinsics, or ``None`` and why (counted; orientation only then)."""
    try:
        return camera_from_info(info), ""
    except IntrinsicsError as error:
        estimator.counters["event:invalid_intrinsics"] += 1
        estimator.counters[f"camera_info_rejected:{error.reason}"] += 1
        return None, f"camera_info rejected: {error}"


def _write_markdown(path: Path, summary: dict[str, Any]) -> None:
    lines = [
        "# headpose_bag report",
        "",
        f"- input: `{summary['input_bag']}` (image topic `{summary['image_topic']}`, "
        f"camera info `{summary['camera_info_topic']}`)",
        f"- output bag: `{summary['output_bag']}` ({summary['storage']}), "
        f"topics {', '.join(summary['output_topics'])}",
        f"- model: `{summary['model']}` on {summary['device']}",
        f"- frames: {summary['frames']}, faces: {summary['faces']}",
        "",
        "| status | frames |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in sorted(summary["frames_by_status"].items())],
        "",
        "| stage | p50 ms | p95 ms |",
        "| --- | --- | --- |",
        *[f"| {k} | {v['p50']} | {v['p95']} |" for k, v in summary["latency_ms"].items()],
    ]
    if "plots" in summary:
        lines += ["", "![angles and attention over time](timeline.png)"]
    if "ground_truth" in summary:
        lines += [
            "",
            "## Ground truth",
            "",
            "```json",
            json.dumps(summary["ground_truth"], indent=2),
            "```",
        ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Console entry point; exit code 2 for a bad bag, settings or model."""
    return tool_main(build_parser(), argv, "bag", run, (BagToolError, ReaderError, WriterError))


if __name__ == "__main__":
    sys.exit(main())
