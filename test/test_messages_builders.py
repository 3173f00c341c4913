"""Result <-> message conversions, as plain functions: no ROS graph, both message libraries."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from headpose_ros.core.config import iter_settings
from headpose_ros.core.geometry import euler_to_matrix, quaternion_to_rotation
from headpose_ros.core.image_codec import ImageDecodeError
from headpose_ros.core.metric_pose import IntrinsicsError, camera_from_intrinsics
from headpose_ros.core.results import FaceResult, FrameResult
from headpose_ros.messages import (
    OUTPUT_TOPICS,
    camera_from_info,
    camera_info_message,
    face_boxes_from_message,
    frame_messages,
    image_from_message,
    main_face_index,
    parameter_descriptor,
    rclpy_factory,
    rclpy_image_message,
    rosbags_factory,
    stamp_ns,
    time_message,
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
    message = frame_messages(rclpy_factory, header, frame, "ibug68", None).topics["faces"]
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


def test_one_pose_per_face_is_shared_by_every_topic(frame: FrameResult) -> None:
    messages = frame_messages(rclpy_factory, None, frame, "ibug68", None, transforms=True)
    assert set(messages.topics) == set(OUTPUT_TOPICS)
    faces = messages.topics["faces"].faces
    assert messages.topics["poses"].poses == [face.pose for face in faces]
    assert messages.topics["pose"].pose == faces[0].pose  # the largest face
    for face, result in zip(faces, frame.faces, strict=True):
        q = face.pose.orientation
        np.testing.assert_allclose(
            quaternion_to_rotation(q.x, q.y, q.z, q.w), result.rotation, atol=1e-12
        )
    assert messages.transforms[0].transform.rotation == faces[0].pose.orientation
    only = frame_messages(rclpy_factory, None, frame, "ibug68", None, topics=("poses",))
    assert set(only.topics) == {"poses"} and only.transforms == []


def test_main_face_is_the_largest(frame: FrameResult) -> None:
    assert main_face_index(frame) == 0
    assert main_face_index(FrameResult(0, 10, 10)) is None
    empty = frame_messages(rclpy_factory, None, FrameResult(0, 10, 10), "ibug68", None)
    assert "pose" not in empty.topics and empty.topics["faces"].faces == []


def test_markers_per_face_and_deletion_of_vanished_faces(frame: FrameResult) -> None:
    messages = frame_messages(
        rclpy_factory, None, frame, "ibug68", None, shown_ids={"1", "9"}, topics=("markers",)
    )
    markers = messages.topics["markers"]
    assert messages.shown_ids == {"1", "2"}
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
    transforms = frame_messages(
        rclpy_factory, None, frame, "ibug68", None, topics=(), transforms=True
    ).transforms
    assert [t.child_frame_id for t in transforms] == ["face_1", "gaze_1"]
    face, gaze = transforms
    assert face.transform.translation.z == pytest.approx(1.5)
    # gaze z axis = head forward (x) axis: rotate (0,0,1) by the gaze quaternion.
    q = gaze.transform.rotation
    gaze_rotation = quaternion_to_rotation(q.x, q.y, q.z, q.w)
    assert gaze_rotation[:, 2] == pytest.approx(frame.faces[0].rotation[:, 0], abs=1e-9)
    # gaze x axis = the subject's right = -head y (REP-155 optical-style gaze frame).
    assert gaze_rotation[:, 0] == pytest.approx(-frame.faces[0].rotation[:, 1], abs=1e-9)


def test_rosbags_messages_match_the_rclpy_ones(frame: FrameResult) -> None:
    typestore = build_typestore()
    make = rosbags_factory(typestore)
    header = make("std_msgs/msg/Header", frame_id="cam")
    messages = frame_messages(make, header, frame, "ibug68", None, {"7"})
    types = {
        "faces": "headpose_msgs/msg/FaceArray",
        "pose": "geometry_msgs/msg/PoseStamped",
        "poses": "geometry_msgs/msg/PoseArray",
        "markers": "visualization_msgs/msg/MarkerArray",
    }
    raw = {topic: typestore.serialize_cdr(m, types[topic]) for topic, m in messages.topics.items()}
    decoded = typestore.deserialize_cdr(raw["faces"], types["faces"])
    assert decoded.faces[0].landmarks[67].visibility == pytest.approx(1.0)
    assert decoded.faces[0].pose.position.z == pytest.approx(1.5)

    # Both libraries encode the same messages (CDR padding bytes may differ: compare decoded).
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from headpose_ros.messages import message_class

    ros = frame_messages(rclpy_factory, Header(frame_id="cam"), frame, "ibug68", None, {"7"})
    for topic, message in ros.topics.items():
        cls = message_class(types[topic])
        from_rclpy = deserialize_message(serialize_message(message), cls)
        assert deserialize_message(bytes(raw[topic]), cls) == from_rclpy, topic


def test_image_message_round_trips() -> None:
    from std_msgs.msg import Header

    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    strided = np.zeros((5, 9, 3), np.uint8)[:, 1:8]  # not contiguous: must be packed
    strided[:] = pixels
    header = Header(
        frame_id="camera_optical_frame", stamp=time_message(rclpy_factory, 12 * 10**9 + 5)
    )
    message = rclpy_image_message(header, strided)
    assert (message.height, message.width, message.step, message.encoding) == (5, 7, 21, "bgr8")
    assert message.header.frame_id == "camera_optical_frame"
    assert stamp_ns(message.header) == 12 * 10**9 + 5
    np.testing.assert_array_equal(image_from_message(message), pixels)
    message.step = 20
    with pytest.raises(ImageDecodeError, match="step 20"):
        image_from_message(message)


def test_compressed_image_message_decodes_by_signature() -> None:
    import cv2
    from sensor_msgs.msg import CompressedImage

    pixels = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    png = cv2.imencode(".png", pixels)[1].tobytes()
    message = CompressedImage(format="jpeg", data=png)  # the format field may lie
    np.testing.assert_array_equal(image_from_message(message), pixels)


@pytest.mark.parametrize("library", ["rclpy", "rosbags"])
def test_camera_info_round_trips(library: str) -> None:
    make = rclpy_factory if library == "rclpy" else rosbags_factory(build_typestore())
    k = np.array([[600.0, 0.0, 330.0], [0.0, 610.0, 235.0], [0.0, 0.0, 1.0]])
    camera = camera_from_intrinsics(
        k, np.array([0.1, -0.05, 0.001, 0.002, 0.01]), "plumb_bob", size=(640, 480)
    )
    header = make("std_msgs/msg/Header", frame_id="cam")
    message = camera_info_message(make, header, camera)
    assert (message.width, message.height, message.distortion_model) == (640, 480, "plumb_bob")
    back = camera_from_info(message)
    np.testing.assert_array_equal(back.matrix, camera.matrix)
    np.testing.assert_array_equal(back.distortion, camera.distortion)
    assert (back.model, back.width, back.height) == ("plumb_bob", 640, 480)
    message.k = np.zeros(9)
    with pytest.raises(IntrinsicsError, match="focal lengths must be positive"):
        camera_from_info(message)


def test_face_boxes_round_trip(frame: FrameResult) -> None:
    faces = frame_messages(rclpy_factory, None, frame, "ibug68", None).topics["faces"]
    boxes, scores = face_boxes_from_message(faces)
    np.testing.assert_allclose(boxes, [face.box for face in frame.faces])
    np.testing.assert_allclose(scores, [face.score for face in frame.faces])
    empty_boxes, empty_scores = face_boxes_from_message(SimpleNamespace(faces=[]))
    assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def test_parameter_descriptors_carry_the_schema() -> None:
    for spec in iter_settings():
        descriptor = parameter_descriptor(rclpy_factory, spec)
        assert descriptor.name == spec.name and descriptor.description == spec.description
        if spec.type is float and spec.low is not None:
            assert descriptor.floating_point_range[0].from_value == spec.low
        if spec.choices:
            assert all(choice in descriptor.additional_constraints for choice in spec.choices)
