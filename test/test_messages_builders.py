"""Result -> message builders, as plain functions: no ROS graph, both message libraries."""

from __future__ import annotations

import numpy as np
import pytest

from headpose_ros.core.geometry import euler_to_matrix
from headpose_ros.core.image_codec import decode_raw_image
from headpose_ros.core.pipeline import FaceResult, FrameResult
from headpose_ros.messages import (
    face_array_message,
    face_transforms,
    main_face,
    marker_array_message,
    pose_array_message,
    rclpy_factory,
    rclpy_image_message,
    rosbags_factory,
)
from headpose_ros.tools.bag_messages import build_typestore

pytest.importorskip("headpose_msgs.msg", reason="headpose_msgs is not built (scripts/setup.sh)")


def make_face(track_id: str, box: tuple[float, float, float, float], metric: bool) -> FaceResult:
    rotation = euler_to_matrix(0.2, -0.1, 0.05)
    position = np.array([0.1, 0.0, 1.5]) if metric else np.array([0.0, 0.0, 1.0])
    return FaceResult(
        track_id=track_id,
        box=box,
        score=0.9,
        yaw=0.2,
        pitch=-0.1,
        roll=0.05,
        rotation=rotation,
        position=position,
        metric=metric,
        attention=0.7,
        landmarks=np.tile([[300.0, 200.0]], (68, 1)),
        visibility=np.linspace(0.0, 1.0, 68),
        source="detector",
        cut_by_border=False,
    )


@pytest.fixture
def frame() -> FrameResult:
    return FrameResult(
        timestamp_ns=3_000_000_000,
        image_width=640,
        image_height=480,
        faces=[
            make_face("1", (250, 120, 340, 210), True),
            make_face("2", (10, 10, 40, 40), False),
        ],
    )


def test_rclpy_face_array_fields(frame: FrameResult) -> None:
    from std_msgs.msg import Header

    header = Header(frame_id="cam")
    message = face_array_message(rclpy_factory, header, frame, "ibug68")
    assert message.header.frame_id == "cam" and (message.image_width, message.image_height) == (
        640,
        480,
    )
    first = message.faces[0]
    assert first.id == "1" and first.position_is_metric and first.landmark_scheme == "ibug68"
    assert (first.box.center_x, first.box.center_y, first.box.size_x, first.box.size_y) == (
        295,
        165,
        90,
        90,
    )
    assert first.landmarks[67].visibility == pytest.approx(1.0) and first.landmarks[0].x == 300.0
    assert first.pose.position.z == pytest.approx(1.5)
    assert not message.faces[1].position_is_metric


def test_main_face_is_the_largest(frame: FrameResult) -> None:
    assert main_face(frame).track_id == "1"
    assert main_face(FrameResult(0, 10, 10)) is None


def test_markers_per_face_and_deletion_of_vanished_faces(frame: FrameResult) -> None:
    markers, shown = marker_array_message(
        rclpy_factory, None, frame, None, previous_ids={"1", "9"}
    )
    assert shown == {"1", "2"}
    by_namespace: dict[str, list] = {}
    for marker in markers.markers:
        by_namespace.setdefault(marker.ns, []).append(marker)
    assert len({m.id for m in by_namespace["face_1"]}) == len(by_namespace["face_1"]) == 4
    assert [m.action for m in by_namespace["face_9"]] == [2] * 4
    landmarks = next(m for m in by_namespace["face_1"] if m.type == 7)
    assert len(landmarks.points) == len(landmarks.colors) == 68
    assert landmarks.colors[0].r == pytest.approx(1.0) and landmarks.colors[-1].g == pytest.approx(
        1.0
    )


def test_transforms_only_for_metric_faces(frame: FrameResult) -> None:
    transforms = face_transforms(rclpy_factory, None, frame)
    assert [t.child_frame_id for t in transforms] == ["face_1", "gaze_1"]
    face, gaze = transforms
    assert face.transform.translation.z == pytest.approx(1.5)
    # gaze z axis = head forward (x) axis: rotate (0,0,1) by the gaze quaternion.
    q = gaze.transform.rotation
    x, y, z, w = q.x, q.y, q.z, q.w
    gaze_z = np.array([2 * (x * z + y * w), 2 * (y * z - x * w), 1 - 2 * (x * x + y * y)])
    assert gaze_z == pytest.approx(frame.faces[0].rotation[:, 0], abs=1e-9)


def test_rosbags_messages_match_the_rclpy_ones(frame: FrameResult) -> None:
    typestore = build_typestore()
    make = rosbags_factory(typestore)
    header = make("std_msgs/msg/Header", frame_id="cam")
    message = face_array_message(make, header, frame, "ibug68")
    raw = typestore.serialize_cdr(message, "headpose_msgs/msg/FaceArray")
    decoded = typestore.deserialize_cdr(raw, "headpose_msgs/msg/FaceArray")
    assert decoded.faces[0].landmarks[67].visibility == pytest.approx(1.0)
    assert decoded.faces[0].pose.position.z == pytest.approx(1.5)
    poses = pose_array_message(make, header, frame)
    typestore.serialize_cdr(poses, "geometry_msgs/msg/PoseArray")
    markers, _ = marker_array_message(make, header, frame, None, {"7"})
    typestore.serialize_cdr(markers, "visualization_msgs/msg/MarkerArray")

    # Both libraries encode the same message (CDR padding bytes may differ, so compare decoded).
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from headpose_msgs.msg import FaceArray

    ros_message = face_array_message(rclpy_factory, Header(frame_id="cam"), frame, "ibug68")
    from_rclpy = deserialize_message(serialize_message(ros_message), FaceArray)
    assert deserialize_message(bytes(raw), FaceArray) == from_rclpy


def test_image_message_round_trips_through_the_core_decoder() -> None:
    from std_msgs.msg import Header

    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    strided = np.zeros((5, 9, 3), np.uint8)[:, 1:8]  # not contiguous: must be packed
    strided[:] = pixels
    header = Header(frame_id="camera_optical_frame")
    message = rclpy_image_message(header, strided)
    assert (message.height, message.width, message.step, message.encoding) == (5, 7, 21, "bgr8")
    assert message.header.frame_id == "camera_optical_frame"
    decoded = decode_raw_image(
        message.encoding, message.height, message.width, message.step, False, message.data
    )
    np.testing.assert_array_equal(decoded, pixels)
