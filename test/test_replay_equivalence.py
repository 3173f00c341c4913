"""A bag replayed into the live node gives the offline bag tool's results, frame for frame."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from node_harness import Probe, start_node, stop_node, write_params
from rosbags.rosbag2 import Reader, Writer

from headpose_ros.demo import astronaut_frame, demo_camera_info, image_message
from headpose_ros.replay import replay
from headpose_ros.tools.bag_messages import build_typestore

pytest.importorskip("headpose_msgs.msg", reason="headpose_msgs is not built (scripts/setup.sh)")

SETTINGS = {
    "inference.threads": 1,
    "tracking.deterministic_ids": True,
    "detector.asynchronous": False,
}
FRAMES = 8


def write_camera_bag(path: Path) -> Path:
    """A real rosbag2 (sqlite3) of an animated face with its CameraInfo, via rosbags."""
    from rclpy.serialization import serialize_message

    typestore = build_typestore()
    with Writer(path, version=9) as writer:
        images = writer.add_connection(
            "/cam/image_raw", "sensor_msgs/msg/Image", typestore=typestore
        )
        infos = writer.add_connection(
            "/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=typestore
        )
        for index in range(FRAMES):
            stamp = 1_000_000_000 + index * 66_000_000
            writer.write(infos, stamp, serialize_message(demo_camera_info(stamp)))
            frame = astronaut_frame(0.9 + 0.03 * index, (-40.0 + 10.0 * index, 0.0), 2.0 * index)
            writer.write(images, stamp, serialize_message(image_message(frame, stamp)))
    return path


def faces_by_stamp(messages) -> dict[tuple[int, int], list]:
    return {(m.header.stamp.sec, m.header.stamp.nanosec): list(m.faces) for m in messages}


def assert_same_faces(live: list, offline: list) -> None:
    assert [f.id for f in live] == [f.id for f in offline]
    for a, b in zip(live, offline, strict=True):
        assert (a.yaw, a.pitch, a.roll) == pytest.approx((b.yaw, b.pitch, b.roll), abs=1e-5)
        assert a.position_is_metric == b.position_is_metric
        pa, pb = a.pose.position, b.pose.position
        assert (pa.x, pa.y, pa.z) == pytest.approx((pb.x, pb.y, pb.z), abs=1e-5)
        la = np.array([[p.x, p.y, p.visibility] for p in a.landmarks])
        lb = np.array([[p.x, p.y, p.visibility] for p in b.landmarks])
        assert la == pytest.approx(lb, abs=1e-3)


def test_replayed_bag_matches_the_offline_tool(
    tmp_path: Path, model_dir: Path, ros_context
) -> None:
    bag = write_camera_bag(tmp_path / "camera_bag")
    config = tmp_path / "settings.yaml"
    config.write_text(
        "".join(
            f"{k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in SETTINGS.items()
        )
    )
    offline_out = tmp_path / "offline"
    command = [sys.executable, "-m", "headpose_ros.tools.run_bag", str(bag)]
    command += ["--output", str(offline_out), "--config", str(config)]
    command += ["--model-dir", str(model_dir), "--image-topic", "/cam/image_raw"]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    typestore = build_typestore()
    with Reader(offline_out) as reader:
        connections = [c for c in reader.connections if c.topic == "/headpose/faces"]
        offline = faces_by_stamp(
            typestore.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages(connections)
        )
    assert len(offline) == FRAMES and any(offline.values())

    params = write_params(tmp_path / "node.yaml", model_dir, **SETTINGS)
    process = start_node(
        params, "/test", "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info"
    )
    probe = Probe(ros_context)
    try:
        assert probe.spin_until(lambda: probe.node.count_subscribers("/cam/image_raw") > 0, 60.0)
        counts = replay(bag, lockstep_topic="/test/faces", context=ros_context)
        assert counts["lockstep_timeouts"] == 0 and counts["published"] == 2 * FRAMES
        assert probe.spin_until(lambda: len(probe.received["faces"]) >= FRAMES, 10.0)
    finally:
        probe.close()
        stop_node(process)
    live = faces_by_stamp(probe.received["faces"])
    assert set(live) == set(offline)
    for stamp, faces in offline.items():
        assert_same_faces(live[stamp], faces)
