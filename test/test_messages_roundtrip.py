"""Every headpose_msgs type survives a trip through real DDS to another process and back."""

from __future__ import annotations

import math

import pytest
from conftest import spin_until

msg = pytest.importorskip(
    "headpose_msgs.msg", reason="headpose_msgs is not built (scripts/setup.sh)"
)
from geometry_msgs.msg import Point, Pose, Quaternion  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import Header  # noqa: E402


def sample_box() -> msg.BoundingBox2D:
    return msg.BoundingBox2D(center_x=320.5, center_y=240.25, size_x=96.0, size_y=120.0)


# float32 fields get values a float32 holds exactly, so equality after the trip is exact.
def sample_landmark(index: int = 7) -> msg.Landmark2D:
    return msg.Landmark2D(x=100.0 + index, y=200.5 - index, visibility=0.25 + index / 256.0)


def sample_face(face_id: str = "3") -> msg.Face:
    half = math.sqrt(0.5)
    return msg.Face(
        id=face_id,
        box=sample_box(),
        detection_score=0.9375,
        yaw=0.375,
        pitch=-0.125,
        roll=0.0625,
        pose=Pose(
            position=Point(x=0.1, y=-0.05, z=1.2),
            orientation=Quaternion(x=0.0, y=half, z=0.0, w=half),
        ),
        position_is_metric=True,
        landmark_scheme="ibug68",
        landmarks=[sample_landmark(i) for i in range(68)],
        attention=0.75,
    )


def sample_face_array() -> msg.FaceArray:
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 123_456_789
    return msg.FaceArray(
        header=header,
        image_width=640,
        image_height=480,
        faces=[sample_face("1"), sample_face("2")],
    )


SAMPLES = {
    "BoundingBox2D": sample_box,
    "Landmark2D": sample_landmark,
    "Face": sample_face,
    "FaceArray": sample_face_array,
}


def test_samples_are_not_defaults() -> None:
    # A round trip of default-valued messages would pass even if fields were dropped.
    for name, make in SAMPLES.items():
        assert make() != getattr(msg, name)(), name


def test_every_message_type_round_trips_between_processes(ros_context, spawn_python) -> None:
    topics = {name: f"/roundtrip/{name.lower()}" for name in SAMPLES}
    peer_args = [arg for name in SAMPLES for arg in (f"headpose_msgs/msg/{name}", topics[name])]
    peer = spawn_python("test/peers/echo_peer.py", *peer_args)
    assert peer.stdout.readline().strip() == "ready", peer.stderr.read()

    node = Node("roundtrip_test", context=ros_context)
    received: dict[str, object] = {}
    publishers = {}
    for name in SAMPLES:
        cls = getattr(msg, name)
        publishers[name] = node.create_publisher(cls, topics[name], 10)
        node.create_subscription(
            cls, f"{topics[name]}/echo", lambda m, n=name: received.setdefault(n, m), 10
        )
    sent = {name: make() for name, make in SAMPLES.items()}

    def all_echoed() -> bool:
        for name, publisher in publishers.items():
            if name not in received:
                publisher.publish(sent[name])  # repeat until discovery has matched the peer
        return len(received) == len(SAMPLES)

    assert spin_until(node, all_echoed, timeout=30.0), (
        f"no echo for {sorted(set(SAMPLES) - set(received))}"
    )
    for name in SAMPLES:
        assert received[name] == sent[name], name
    node.destroy_node()
