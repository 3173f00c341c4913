"""Demo: the real node over DDS on a moving face, with results printed and drawn.

``headpose_demo`` (run by ``scripts/demo.sh``) starts ``headpose_node`` as its own process,
publishes an animated sequence made from scikit-image's public-domain astronaut photograph
(the head drifts across the frame, comes closer and tilts) with camera intrinsics, receives the
node's face arrays and annotated debug images in this process, prints per-frame pose and
attention, and writes an annotated video, an image strip and a summary. It needs neither
``../shared`` nor a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from headpose_msgs.msg import FaceArray
from headpose_ros.core.metric_pose import camera_from_intrinsics
from headpose_ros.dds_profile import use_large_image_profile
from headpose_ros.messages import (
    camera_info_message,
    rclpy_factory,
    rclpy_image_message,
    time_message,
)

__all__ = ["astronaut_frame", "demo_camera_info", "image_message", "main"]

WIDTH, HEIGHT, FOCAL_PX = 640, 480, 600.0
FRAME_ID = "demo_camera_optical_frame"


def astronaut_frame(
    scale: float = 1.0, shift_px: tuple[float, float] = (0.0, 0.0), roll_deg: float = 0.0
) -> np.ndarray:
    """scikit-image's public-domain astronaut portrait on a grey 640x480 canvas.

    ``scale`` = 1 shows the 512 px portrait 360 px tall; ``shift_px`` moves it from the centre;
    ``roll_deg`` rotates it in the image plane (counter-clockwise on screen).
    """
    from skimage import data

    portrait = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    zoom = 360.0 / portrait.shape[0] * scale
    centre = (portrait.shape[1] / 2.0, portrait.shape[0] / 2.0)
    affine = cv2.getRotationMatrix2D(centre, roll_deg, zoom)
    affine[:, 2] += np.array([WIDTH / 2.0 + shift_px[0], HEIGHT / 2.0 + shift_px[1]]) - centre
    return cv2.warpAffine(
        portrait, affine, (WIDTH, HEIGHT), borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90)
    )


def image_message(image_bgr: np.ndarray, stamp_ns: int, frame_id: str = FRAME_ID) -> Image:
    """sensor_msgs/Image (bgr8) of a numpy image, stamped ``stamp_ns``."""
    header = Header(frame_id=frame_id, stamp=time_message(rclpy_factory, stamp_ns))
    return rclpy_image_message(header, image_bgr)


def demo_camera_info(
    stamp_ns: int = 0,
    width: int = WIDTH,
    height: int = HEIGHT,
    focal_px: float = FOCAL_PX,
    frame_id: str = FRAME_ID,
) -> CameraInfo:
    """CameraInfo of the demo's virtual camera: ideal pinhole, no distortion.

    Send it with every image, stamped like it, as camera drivers do: a subscriber that joins
    late or loses one message still gets the intrinsics with the next frame.
    """
    matrix = [[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]]
    header = Header(frame_id=frame_id, stamp=time_message(rclpy_factory, stamp_ns))
    camera = camera_from_intrinsics(np.array(matrix), np.zeros(5), size=(width, height))
    return camera_info_message(rclpy_factory, header, camera)


@dataclass
class _Frame:
    index: int
    image: np.ndarray
    roll_deg: float
    sent_at: float = 0.0


def _animation(count: int) -> list[_Frame]:
    """Make frames in which the head drifts left to right, comes closer and tilts."""
    frames = []
    for index in range(count):
        phase = index / max(count - 1, 1)
        shift = (-120.0 + 240.0 * phase, 20.0 * np.sin(2 * np.pi * phase))
        scale = 0.8 + 0.4 * phase
        roll = 20.0 * np.sin(2 * np.pi * phase)
        frames.append(_Frame(index, astronaut_frame(scale, shift, roll), roll))
    return frames


def _start_node(params: Path) -> subprocess.Popen[bytes]:
    executable = Path(sys.executable).with_name("headpose_node")
    command = (
        [str(executable)] if executable.exists() else [sys.executable, "-m", "headpose_ros.node"]
    )
    return subprocess.Popen(
        [*command, "--ros-args", "-r", "__ns:=/demo", "--params-file", str(params)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _format_face(face: object) -> str:
    yaw, pitch, roll = np.rad2deg([face.yaw, face.pitch, face.roll])
    p = face.pose.position
    where = f"{np.linalg.norm([p.x, p.y, p.z]):.2f} m" if face.position_is_metric else "no K"
    return (
        f"id {face.id}: yaw {yaw:+6.1f} pitch {pitch:+6.1f} roll {roll:+6.1f} deg, "
        f"distance {where}, attention {face.attention:.2f}"
    )


def run(
    output_dir: Path, frame_count: int, rate_hz: float, timeout_s: float, model_dir: str
) -> int:
    """Run the demo; return the process exit code."""
    output_dir.mkdir(parents=True, exist_ok=True)
    params = Path(tempfile.mkdtemp()) / "demo_params.yaml"
    params.write_text(
        '"/**":\n  ros__parameters:\n'
        "    tracking:\n      deterministic_ids: true\n    input:\n      reliability: reliable\n"
        f"    inference:\n      model_dir: {json.dumps(model_dir)}\n"
    )
    print(f"demo: {use_large_image_profile()}")  # before the node starts: both processes use it
    print(f"demo: starting headpose_node (ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')})")
    node_process = _start_node(params)
    rclpy.init()
    node = Node("headpose_demo")
    results: dict[int, FaceArray] = {}
    annotated: dict[int, np.ndarray] = {}
    received_at: dict[int, float] = {}

    def on_faces(message: FaceArray) -> None:
        results[message.header.stamp.nanosec // 1000] = message
        received_at[message.header.stamp.nanosec // 1000] = time.monotonic()

    def on_debug(message: Image) -> None:
        image = np.frombuffer(bytes(message.data), np.uint8).reshape(
            message.height, message.width, 3
        )
        annotated[message.header.stamp.nanosec // 1000] = image

    node.create_subscription(FaceArray, "/demo/faces", on_faces, 50)
    node.create_subscription(Image, "/demo/debug_image", on_debug, 50)
    image_pub = node.create_publisher(Image, "/demo/image", 10)
    info_pub = node.create_publisher(CameraInfo, "/demo/camera_info", 10)
    frames = _animation(frame_count)
    try:
        deadline = time.monotonic() + timeout_s
        while image_pub.get_subscription_count() == 0:
            if node_process.poll() is not None or time.monotonic() > deadline:
                error = node_process.stderr.read().decode() if node_process.stderr else ""
                print(f"demo: the node did not start:\n{error}", file=sys.stderr)
                return 1
            rclpy.spin_once(node, timeout_sec=0.1)
        print(f"demo: node active; sending {frame_count} frames at {rate_hz:g} Hz")
        for frame in frames:
            frame.sent_at = time.monotonic()
            # Stamps are synthetic and unique per frame: 1 s + index microseconds.
            stamp = 1_000_000_000 + frame.index * 1000
            info_pub.publish(demo_camera_info(stamp))
            image_pub.publish(image_message(frame.image, stamp))
            until = frame.sent_at + 1.0 / rate_hz
            while time.monotonic() < until:
                rclpy.spin_once(node, timeout_sec=max(0.0, until - time.monotonic()))
        settle = time.monotonic() + 3.0
        while len(results) < frame_count and time.monotonic() < settle:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        node_process.send_signal(subprocess.signal.SIGINT)
        try:
            node_process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_process.kill()
    return _report(frames, results, annotated, received_at, output_dir)


def _report(
    frames: list[_Frame],
    results: dict[int, FaceArray],
    annotated: dict[int, np.ndarray],
    received_at: dict[int, float],
    output_dir: Path,
) -> int:
    rows, roll_errors, latencies = [], [], []
    for frame in frames:
        message = results.get(frame.index)
        if message is None:
            print(
                f"frame {frame.index:3d}: no result (dropped: the node processes the newest frame)"
            )
            rows.append({"frame": frame.index, "result": "dropped"})
            continue
        latencies.append((received_at[frame.index] - frame.sent_at) * 1e3)
        faces = list(message.faces)
        text = "; ".join(_format_face(f) for f in faces) if faces else "no face"
        print(f"frame {frame.index:3d} (applied roll {frame.roll_deg:+5.1f}): {text}")
        if faces:
            # Tilting the image counter-clockwise by r moves the top of the head to the image
            # left, the subject's right: roll = +r in the convention of headpose_msgs/Face.
            roll_errors.append(abs(np.rad2deg(faces[0].roll) - frame.roll_deg))
        rows.append(
            {
                "frame": frame.index,
                "applied_roll_deg": frame.roll_deg,
                "faces": [
                    {
                        "id": f.id,
                        "yaw_deg": float(np.rad2deg(f.yaw)),
                        "pitch_deg": float(np.rad2deg(f.pitch)),
                        "roll_deg": float(np.rad2deg(f.roll)),
                        "position_m": [f.pose.position.x, f.pose.position.y, f.pose.position.z],
                        "metric": f.position_is_metric,
                        "attention": f.attention,
                    }
                    for f in faces
                ],
            }
        )
    (output_dir / "demo_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = [output_dir / "demo_results.jsonl"]
    if annotated:
        ordered = [annotated[i] for i in sorted(annotated)]
        video = output_dir / "demo_annotated.mp4"
        writer = cv2.VideoWriter(
            str(video), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, (WIDTH, HEIGHT)
        )
        for image in ordered:
            writer.write(image)
        writer.release()
        picks = np.linspace(0, len(ordered) - 1, 6).astype(int)
        thumbs = [cv2.resize(ordered[i], (WIDTH // 2, HEIGHT // 2)) for i in picks]
        strip = output_dir / "demo_strip.png"
        cv2.imwrite(str(strip), np.vstack([np.hstack(thumbs[:3]), np.hstack(thumbs[3:])]))
        written += [video, strip]
    detected = sum(1 for r in rows if r.get("faces"))
    summary = [
        f"frames sent: {len(frames)}, results received: {len(results)}, with a face: {detected}",
        f"latency image -> faces (includes DDS): p50 {np.percentile(latencies, 50):.1f} ms, "
        f"p95 {np.percentile(latencies, 95):.1f} ms"
        if latencies
        else "latency: no results",
        f"roll tracking |estimated - applied tilt|: median {np.median(roll_errors):.1f} deg"
        if roll_errors
        else "roll tracking: no faces",
    ]
    (output_dir / "demo_summary.txt").write_text("\n".join(summary) + "\n")
    written.append(output_dir / "demo_summary.txt")
    print("\n".join(["", "summary:", *summary, "", "written:", *[f"  {p}" for p in written]]))
    return 0 if detected else 1


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point of ``headpose_demo``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("outputs/demo"), help="result folder")
    parser.add_argument("--frames", type=int, default=60, help="number of frames to send")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second to send")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node")
    parser.add_argument(
        "--model-dir", default="", help="model folder (default: the shipped models)"
    )
    args = parser.parse_args(argv)
    raise SystemExit(run(args.output, args.frames, args.rate, args.timeout, args.model_dir))


if __name__ == "__main__":
    main()
