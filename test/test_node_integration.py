"""The node executable over real DDS: outputs, parameters, lifecycle, bad input, failures.

Each test starts ``headpose_node`` as a subprocess with a parameter file (as a launch file
would) and talks to it from a probe node in the test process.
"""

from __future__ import annotations

import signal
from pathlib import Path

import cv2
import hostile
import numpy as np
import pytest
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_harness import (
    Probe,
    astronaut_frame,
    demo_camera_info,
    image_message,
    node_and_probe,
    node_output,
    start_node,
    write_params,
)
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage, Image

pytest.importorskip("headpose_msgs.msg", reason="headpose_msgs is not built (scripts/setup.sh)")

SECOND = 1_000_000_000
DELETE = 2


@pytest.fixture
def running_node(tmp_path: Path, model_dir: Path, ros_context):
    """An auto-activated node on namespace /test and a probe talking to it."""
    with node_and_probe(write_params(tmp_path / "params.yaml", model_dir), ros_context) as pair:
        yield pair


def test_every_output_carries_the_image_header(running_node) -> None:
    probe, _ = running_node
    probe.send_camera_info(demo_camera_info(5 * SECOND))
    image = astronaut_frame()
    faces = probe.send_and_wait(image_message(image, 5 * SECOND))
    assert (faces.header.stamp.sec, faces.header.frame_id) == (5, "demo_camera_optical_frame")
    assert (faces.image_width, faces.image_height) == (640, 480)
    assert len(faces.faces) == 1, "the detector finds the astronaut's face"
    face = faces.faces[0]
    assert face.id == "1" and face.landmark_scheme == "ibug68" and len(face.landmarks) == 68
    assert all(0.0 <= lm.visibility <= 1.0 for lm in face.landmarks)
    assert 0.0 <= face.attention <= 1.0 and 0.0 < face.detection_score <= 1.0
    assert 150 < face.box.center_x < 490 and 60 < face.box.center_y < 420
    quaternion = face.pose.orientation
    norm = np.linalg.norm([quaternion.x, quaternion.y, quaternion.z, quaternion.w])
    assert norm == pytest.approx(1.0, abs=1e-6)

    for topic in ("pose", "poses", "markers", "debug_image"):
        assert probe.spin_until(lambda t=topic: probe.received[t], 10.0), f"nothing on {topic}"
    pose = probe.received["pose"][-1]
    assert pose.header == faces.header and pose.pose == face.pose
    assert probe.received["poses"][-1].poses == [face.pose]
    debug = probe.received["debug_image"][-1]
    assert (debug.width, debug.height, debug.encoding) == (640, 480, "bgr8")
    annotated = np.frombuffer(bytes(debug.data), np.uint8).reshape(480, 640, 3)
    assert np.abs(annotated.astype(int) - image).sum() > 0, "debug image is annotated"
    namespaces = {m.ns for m in probe.received["markers"][-1].markers}
    assert namespaces == {"face_1"}


def test_metric_position_needs_camera_info(running_node) -> None:
    probe, _ = running_node
    image = astronaut_frame()
    without = probe.send_and_wait(image_message(image, 1 * SECOND)).faces[0]
    assert not without.position_is_metric
    position = without.pose.position
    assert np.linalg.norm([position.x, position.y, position.z]) == pytest.approx(1.0, abs=1e-6)
    assert probe.spin_until(
        lambda: probe.latest_diagnostics().get("faces not metric: no camera_info received") == "1",
        5.0,
    )
    values = probe.send_camera_info(demo_camera_info(2 * SECOND))
    assert values["camera"] == "fx 600.0 fy 600.0, plumb_bob, 640x480"
    with_info = probe.send_and_wait(image_message(image, 2 * SECOND)).faces[0]
    assert with_info.position_is_metric and with_info.pose.position.z > 0.1


def test_markers_of_a_vanished_face_are_deleted(running_node) -> None:
    probe, _ = running_node
    probe.send_and_wait(image_message(astronaut_frame(), 1 * SECOND))
    # With the default drop_frames the track survives a few empty frames; keep sending.
    for index in range(2, 12):
        faces = probe.send_and_wait(
            image_message(np.full((480, 640, 3), 90, np.uint8), index * SECOND)
        )
        if not faces.faces:
            break
    assert faces.faces == []
    assert probe.spin_until(
        lambda: any(
            m.ns == "face_1" and m.action == DELETE
            for array in probe.received["markers"]
            for m in array.markers
        ),
        10.0,
    )


def test_bad_frames_are_counted_and_valid_ones_still_processed(running_node) -> None:
    probe, process = running_node
    bad = [
        Image(height=4, width=4, encoding="xyz16", step=8, data=bytes(32)),
        Image(height=10, width=10, encoding="bgr8", step=5, data=bytes(50)),
        Image(height=10, width=10, encoding="rgb8", step=30, data=bytes(10)),
        Image(height=0, width=0, encoding="bgr8", step=0, data=b""),
    ]
    for index, message in enumerate(bad):
        message.header.stamp.sec = 100 + index
        probe.image.publish(message)
        probe.spin_until(lambda: False, 0.1)
    faces = probe.send_and_wait(image_message(astronaut_frame(), 200 * SECOND))
    assert len(faces.faces) == 1
    assert process.poll() is None

    def counted() -> bool:
        if not probe.received["diagnostics"]:
            return False
        values = probe.latest_diagnostics()
        # Under load a bad frame may be replaced by the next one before the worker sees it:
        # then it is counted as dropped instead of rejected. Either way it is accounted for.
        rejected = sum(int(v) for k, v in values.items() if k.startswith("rejected: "))
        dropped = int(values["frames dropped (newest frame wins)"])
        return (
            rejected >= 1
            and rejected + dropped == len(bad)
            and int(values["frames received"]) == len(bad) + 1
            and int(values["frames processed"]) == 1
        )

    assert probe.spin_until(counted, 5.0), probe.latest_diagnostics()
    values = probe.latest_diagnostics()
    assert values["device"] == "cpu"
    # Detection is visible over DDS: the run on the good frame found and published its face.
    assert int(values["detection: detector_runs"]) >= 1
    assert int(values["detection: faces_detected"]) >= 1
    assert int(values["detection: faces_published"]) >= 1


def test_compressed_transport_decodes_jpeg(tmp_path: Path, model_dir: Path, ros_context) -> None:
    params = write_params(tmp_path / "p.yaml", model_dir, **{"input.transport": "compressed"})
    with node_and_probe(params, ros_context, wait_active=False) as (probe, _):
        assert probe.spin_until(lambda: probe.compressed.get_subscription_count() > 0, 60.0)
        ok, jpeg = cv2.imencode(".jpg", astronaut_frame())
        message = CompressedImage(format="jpeg", data=jpeg.tobytes())
        message.header.stamp.sec = 7
        faces = probe.send_and_wait(message)
        assert len(faces.faces) == 1 and faces.image_width == 640


def _set_parameter(probe: Probe, name: str, value: ParameterValue):
    request = SetParameters.Request(parameters=[Parameter(name=name, value=value)])
    service = "/test/headpose/set_parameters"
    return _call(probe, SetParameters, service, request, True).results[0]


def test_invalid_parameters_are_rejected_with_a_reason(running_node) -> None:
    probe, _ = running_node
    string = ParameterType.PARAMETER_STRING
    double = ParameterType.PARAMETER_DOUBLE
    result = _set_parameter(
        probe, "detector.backend", ParameterValue(type=string, string_value="yolo")
    )
    assert not result.successful and "detector.backend must be one of" in result.reason
    result = _set_parameter(
        probe, "inference.device", ParameterValue(type=string, string_value="gpu")
    )
    assert not result.successful and "inference.device" in result.reason
    result = _set_parameter(
        probe, "tracking.iou_threshold", ParameterValue(type=double, double_value=1.5)
    )
    assert not result.successful
    result = _set_parameter(
        probe, "tracking.iou_threshold", ParameterValue(type=double, double_value=0.4)
    )
    assert result.successful


#: The state each transition leads to when it succeeds.
_TARGET = {
    Transition.TRANSITION_CONFIGURE: State.PRIMARY_STATE_INACTIVE,
    Transition.TRANSITION_ACTIVATE: State.PRIMARY_STATE_ACTIVE,
    Transition.TRANSITION_DEACTIVATE: State.PRIMARY_STATE_INACTIVE,
    Transition.TRANSITION_CLEANUP: State.PRIMARY_STATE_UNCONFIGURED,
}


def _call(probe: Probe, service_type: type, name: str, request: object, idempotent: bool):
    """Call a service of the node; ``None`` when a non-idempotent call got no answer.

    ``wait_for_service`` may be answered by a node of the same name that has just exited
    (its endpoints linger in discovery under load), and the request then goes nowhere: an
    idempotent request is simply sent again.
    """
    client = probe.node.create_client(service_type, name)
    assert client.wait_for_service(timeout_sec=20.0)
    for _ in range(6):
        future = client.call_async(request)
        if probe.spin_until(future.done, 10.0):
            return future.result()
        if not idempotent:
            return None
    raise AssertionError(f"{name} never answered")


def _transition(probe: Probe, transition: int) -> bool:
    request = ChangeState.Request(transition=Transition(id=transition))
    for _ in range(6):
        response = _call(probe, ChangeState, "/test/headpose/change_state", request, False)
        if response is not None:
            return response.success
        if _state(probe) == _TARGET[transition]:  # it happened; only the answer was lost
            return True
    raise AssertionError("change_state never answered")


def _state(probe: Probe) -> int:
    response = _call(probe, GetState, "/test/headpose/get_state", GetState.Request(), True)
    return response.current_state.id


def test_lifecycle_transitions(tmp_path: Path, model_dir: Path, ros_context) -> None:
    params = write_params(tmp_path / "p.yaml", model_dir, autostart=False)
    with node_and_probe(params, ros_context, wait_active=False) as (probe, _):
        assert _state(probe) == State.PRIMARY_STATE_UNCONFIGURED
        assert _transition(probe, Transition.TRANSITION_CONFIGURE)
        assert _state(probe) == State.PRIMARY_STATE_INACTIVE
        assert probe.image.get_subscription_count() == 0, "inactive node takes no images"
        assert _transition(probe, Transition.TRANSITION_ACTIVATE)
        assert probe.wait_for_node(20.0)
        assert len(probe.send_and_wait(image_message(astronaut_frame(), SECOND)).faces) == 1
        assert _transition(probe, Transition.TRANSITION_DEACTIVATE)
        assert probe.spin_until(lambda: probe.image.get_subscription_count() == 0, 10.0)
        assert _transition(probe, Transition.TRANSITION_CLEANUP)
        assert _state(probe) == State.PRIMARY_STATE_UNCONFIGURED


def test_missing_model_fails_configure_naming_the_file(tmp_path: Path, ros_context) -> None:
    missing = tmp_path / "no_model_here"
    autostarted = start_node(write_params(tmp_path / "a.yaml", missing))
    autostarted.wait(timeout=60)
    output = node_output(autostarted)
    assert autostarted.returncode == 1, output
    assert "configure failed" in output and str(missing / "manifest.json") in output

    managed = write_params(tmp_path / "m.yaml", missing, autostart=False)
    with node_and_probe(managed, ros_context, wait_active=False) as (probe, _):
        assert not _transition(probe, Transition.TRANSITION_CONFIGURE)
        assert _state(probe) == State.PRIMARY_STATE_UNCONFIGURED


def test_invalid_parameter_file_stops_the_node_with_the_reason(
    tmp_path: Path, model_dir: Path
) -> None:
    params = write_params(tmp_path / "p.yaml", model_dir, **{"detector.interval_frames": 0})
    process = start_node(params)
    process.wait(timeout=60)
    output = node_output(process)
    assert process.returncode != 0
    assert "detector.interval_frames" in output


# ------------------------------------------------------------ with the trained model only
@pytest.fixture
def trained_node(tmp_path: Path, trained_model_dir: Path, ros_context):
    # These tests jump between unrelated images; a fresh detection per frame keeps tracking
    # (a crop from the previous frame's landmarks) out of what they measure.
    params = write_params(
        tmp_path / "params.yaml", trained_model_dir, **{"detector.interval_frames": 1}
    )
    with node_and_probe(params, ros_context) as (probe, _):
        yield probe


def steady_face(probe: Probe, image: np.ndarray, first_second: int):
    """The most confident face after three identical frames: the tracker has settled on it."""
    for index in range(3):
        faces = probe.send_and_wait(image_message(image, (first_second + index) * SECOND)).faces
    assert faces
    return max(faces, key=lambda face: face.detection_score)


def most_turned_test_face(data_300w: Path) -> np.ndarray:
    """The helen_test image whose annotated nose tip is furthest off the eyes' midline."""
    from headpose_ros.tools.annotations import read_pts

    def turn(pts_path: Path) -> float:
        points = read_pts(pts_path)
        eye_span = points[45, 0] - points[36, 0]
        return abs(points[30, 0] - (points[36, 0] + points[45, 0]) / 2) / max(eye_span, 1.0)

    best = max(sorted((data_300w / "helen_test").glob("*.pts")), key=turn)
    return cv2.imread(str(best.with_suffix(".jpg")))


def test_mirrored_image_flips_yaw_and_roll(trained_node, data_300w: Path) -> None:
    image = most_turned_test_face(data_300w)
    face = steady_face(trained_node, image, 1)
    mirrored = steady_face(trained_node, image[:, ::-1].copy(), 10)
    assert abs(face.yaw) > np.deg2rad(10), "the chosen face is clearly turned"
    assert np.sign(mirrored.yaw) == -np.sign(face.yaw)
    assert mirrored.yaw == pytest.approx(-face.yaw, abs=np.deg2rad(8))
    assert mirrored.roll == pytest.approx(-face.roll, abs=np.deg2rad(8))


def test_landmarks_lie_inside_the_enlarged_face_box(trained_node) -> None:
    face = trained_node.send_and_wait(image_message(astronaut_frame(), SECOND)).faces[0]
    points = np.array([[lm.x, lm.y] for lm in face.landmarks])
    half = np.array([face.box.size_x, face.box.size_y]) * 0.8
    centre = np.array([face.box.center_x, face.box.center_y])
    assert np.all(np.abs(points - centre) <= half)


def test_metric_distance_scales_inversely_with_image_size(trained_node) -> None:
    # Same face image resized by s under fixed intrinsics: distance must scale as 1/s.
    trained_node.send_camera_info(demo_camera_info())
    distances = {}
    for index, scale in enumerate((0.8, 1.2)):
        face = steady_face(trained_node, astronaut_frame(scale), 10 + 10 * index)
        assert face.position_is_metric
        p = face.pose.position
        distances[scale] = np.linalg.norm([p.x, p.y, p.z])
    assert distances[0.8] / distances[1.2] == pytest.approx(1.2 / 0.8, rel=0.15)


def test_external_boxes_replace_the_detector(tmp_path: Path, model_dir: Path, ros_context) -> None:
    from headpose_msgs.msg import BoundingBox2D, Face, FaceArray

    params = write_params(tmp_path / "p.yaml", model_dir, **{"input.external_boxes": True})
    with node_and_probe(params, ros_context) as (probe, _):
        boxes = probe.node.create_publisher(FaceArray, "/test/face_boxes", 10)
        assert probe.spin_until(lambda: boxes.get_subscription_count() > 0, 20.0)
        upstream = FaceArray(
            faces=[
                Face(
                    box=BoundingBox2D(center_x=294.0, center_y=165.0, size_x=90.0, size_y=90.0),
                    detection_score=0.625,
                )
            ]
        )
        # No boxes for this image's time and no track yet: no face, and the frame is counted.
        assert probe.send_and_wait(image_message(astronaut_frame(), 2 * SECOND)).faces == []
        assert probe.spin_until(
            lambda: (
                probe.received["diagnostics"]
                and probe.latest_diagnostics().get("frames without external boxes") == "1"
            ),
            5.0,
        )
        upstream.header.stamp.sec = 3
        boxes.publish(upstream)
        probe.spin_until(lambda: False, 0.5)
        faces = probe.send_and_wait(image_message(astronaut_frame(), 3 * SECOND)).faces
        assert len(faces) == 1 and faces[0].detection_score == 0.625


@pytest.mark.parametrize(
    ("stop_signal", "transitions"),
    [
        (signal.SIGINT, ()),
        (signal.SIGTERM, ()),
        # No timer runs in these states to end the executor's wait: the signal must still stop
        # the node (it used to hang there until launch killed it).
        (signal.SIGINT, (Transition.TRANSITION_DEACTIVATE,)),
        (signal.SIGTERM, (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP)),
    ],
    ids=["SIGINT-active", "SIGTERM-active", "SIGINT-inactive", "SIGTERM-unconfigured"],
)
def test_stopping_goes_through_the_shutdown_transition(
    tmp_path: Path,
    model_dir: Path,
    ros_context,
    stop_signal: int,
    transitions: tuple[int, ...],
) -> None:
    from lifecycle_msgs.msg import TransitionEvent

    params = write_params(tmp_path / "p.yaml", model_dir)
    with node_and_probe(params, ros_context) as (probe, process):
        for transition in transitions:
            assert _transition(probe, transition)
            assert _state(probe) == _TARGET[transition]
        probe.subscribe("headpose/transition_event", TransitionEvent)
        assert probe.spin_until(
            lambda: probe.node.count_publishers("/test/headpose/transition_event") > 0, 10.0
        )
        probe.spin_until(lambda: False, 0.5)  # let the subscription match before stopping
        process.send_signal(stop_signal)
        assert probe.spin_until(
            lambda: any(
                e.goal_state.id == State.PRIMARY_STATE_FINALIZED
                for e in probe.received["headpose/transition_event"]
            ),
            20.0,
        ), node_output(process)
        assert process.wait(timeout=20) == 0


# ------------------------------------------------------------ hostile input (issue 12)
def test_a_decompression_bomb_is_refused_and_the_node_goes_on(
    tmp_path: Path, model_dir: Path, ros_context
) -> None:
    params = write_params(tmp_path / "p.yaml", model_dir, **{"input.transport": "compressed"})
    with node_and_probe(params, ros_context, wait_active=False) as (probe, process):
        assert probe.spin_until(lambda: probe.compressed.get_subscription_count() > 0, 60.0)
        rss = hostile.peak_rss_reset(process.pid)
        # The PNG of issue 12 (30000x30000 declared) killed the node; this one is 300 bytes.
        bombs = [hostile.png_bomb(30_000, 30_000), hostile.jpeg_bomb(50_000, 50_000)]
        for count, bomb in enumerate(bombs, start=1):
            probe.compressed.publish(CompressedImage(format="png", data=bomb))
            assert probe.spin_until(
                lambda n=count: (
                    probe.latest_diagnostics().get("rejected: image_too_large") == str(n)
                ),
                10.0,
            ), probe.latest_diagnostics()
        jpeg = cv2.imencode(".jpg", astronaut_frame())[1].tobytes()
        message = CompressedImage(format="jpeg", data=jpeg)
        message.header.stamp.sec = 9
        assert len(probe.send_and_wait(message).faces) == 1 and process.poll() is None
        assert hostile.peak_rss_growth(rss, process.pid) < 200 * hostile.MB
    log = node_output(process)
    # Logged once with the sizes; the second, the same reason but for its numbers, is counted.
    assert "declares 30000x30000" in log and "declares 50000x50000" not in log


def test_camera_models_and_sizes_decide_whether_the_position_is_metric(
    running_node,
) -> None:
    probe, process = running_node
    stamps = iter(range(1, 100))

    def face_through(info: object) -> object:
        values = probe.send_camera_info(info)
        faces = probe.send_and_wait(image_message(astronaut_frame(), next(stamps) * SECOND))
        return faces.faces[0], values

    plain, _ = face_through(demo_camera_info())
    p = plain.pose.position
    distance = np.linalg.norm([p.x, p.y, p.z])
    fisheye = demo_camera_info()
    fisheye.distortion_model, fisheye.d = "equidistant", [0.0, 0.0, 0.0, 0.0]
    face, values = face_through(fisheye)
    assert face.position_is_metric and values["camera"].endswith("equidistant, 640x480")
    # A distortion model the node cannot apply: not metric, and said why.
    unknown = demo_camera_info()
    unknown.distortion_model = "kannala_brandt"
    face, values = face_through(unknown)
    assert not face.position_is_metric and "kannala_brandt" in values["camera"]
    # Intrinsics for 1280x720 with a 640x480 image: not a resize, so not metric.
    face, _ = face_through(demo_camera_info(width=1280, height=720))
    assert not face.position_is_metric
    # Intrinsics for 1280x960: the image is that camera's, halved; K is scaled.
    face, _ = face_through(demo_camera_info(width=1280, height=960, focal_px=1200.0))
    p = face.pose.position
    assert face.position_is_metric
    assert np.linalg.norm([p.x, p.y, p.z]) == pytest.approx(distance, rel=0.05)

    def counted() -> bool:
        values = probe.latest_diagnostics()
        return (
            values.get("camera_info rejected: unsupported_model") == "1"
            and values.get("faces not metric: camera_info rejected") == "1"
            and values.get("faces not metric: camera_info does not fit the image") == "1"
            and values.get("event: invalid_intrinsics") == "1"
            and values.get("event: intrinsics_scaled") == "1"
        )

    assert probe.spin_until(counted, 5.0), probe.latest_diagnostics()
    log = node_output(process)
    assert "kannala_brandt" in log
    assert "1280x720" in log and "640x480" in log and "K scaled" in log


def test_each_distinct_reason_is_logged_and_events_are_in_the_diagnostics(
    running_node,
) -> None:
    probe, process = running_node
    for index, encoding in enumerate(["xyz16", "abc", "xyz16"]):
        message = Image(height=4, width=4, encoding=encoding, step=8, data=bytes(32))
        message.header.stamp.sec = 50 + index
        probe.image.publish(message)
        if index < 2:
            # Each new reason is described once; the next frame waits for that, or it could
            # replace this one in the node's one-slot mailbox before the worker took it.
            described = f"'{encoding}'"
            assert probe.spin_until(lambda d=described: d in node_output(process), 10.0)
    probe.send_and_wait(image_message(astronaut_frame(), 10 * SECOND))
    probe.send_and_wait(image_message(astronaut_frame(), 9 * SECOND))  # stamp going back
    probe.send_and_wait(image_message(astronaut_frame(0.5)[:240, :320].copy(), 11 * SECOND))

    def counted() -> bool:
        values = probe.latest_diagnostics()
        return (
            values.get("event: timestamp_not_increasing") == "1"
            and values.get("event: image_size_changed") == "1"
            and int(values.get("rejected: unsupported_encoding", 0))
            + int(values.get("frames dropped (newest frame wins)", 0))
            == 3
        )

    assert probe.spin_until(counted, 5.0), probe.latest_diagnostics()
    log = node_output(process)
    assert "timestamp_not_increasing" in log and "image_size_changed" in log


def test_too_many_faces_are_counted_in_the_diagnostics(
    tmp_path: Path, model_dir: Path, ros_context
) -> None:
    from headpose_msgs.msg import BoundingBox2D, Face, FaceArray

    overrides = {"input.external_boxes": True, "detector.max_faces": 1}
    with node_and_probe(
        write_params(tmp_path / "p.yaml", model_dir, **overrides), ros_context
    ) as (
        probe,
        _,
    ):
        boxes = probe.node.create_publisher(FaceArray, "/test/face_boxes", 10)
        assert probe.spin_until(lambda: boxes.get_subscription_count() > 0, 20.0)
        upstream = FaceArray(
            faces=[
                Face(box=BoundingBox2D(center_x=x, center_y=165.0, size_x=90.0, size_y=90.0))
                for x in (150.0, 294.0)
            ]
        )
        upstream.header.stamp.sec = 3
        boxes.publish(upstream)
        probe.spin_until(lambda: False, 0.5)
        assert len(probe.send_and_wait(image_message(astronaut_frame(), 3 * SECOND)).faces) <= 1
        assert probe.spin_until(
            lambda: probe.latest_diagnostics().get("event: too_many_faces") == "1", 5.0
        ), probe.latest_diagnostics()


def test_parameter_errors_name_the_parameter_and_the_types(running_node, tmp_path: Path) -> None:
    probe, _ = running_node
    string = ParameterType.PARAMETER_STRING
    integer = ParameterType.PARAMETER_INTEGER
    result = _set_parameter(
        probe, "tracking.iou_treshold", ParameterValue(type=integer, integer_value=1)
    )
    assert not result.successful and "'tracking.iou_treshold'" in result.reason
    result = _set_parameter(
        probe, "tracking.iou_threshold", ParameterValue(type=string, string_value="high")
    )
    assert not result.successful
    assert result.reason == (
        "tracking.iou_threshold must be a floating-point number (e.g. 1.0), got the string 'high'"
    )
    result = _set_parameter(
        probe, "tracking.iou_threshold", ParameterValue(type=integer, integer_value=1)
    )
    assert result.successful, "an integer is a valid floating-point value"
    result = _set_parameter(
        probe, "inference.model_dir", ParameterValue(type=string, string_value="/nonexistent")
    )
    assert not result.successful
    assert result.reason == "inference.model_dir: the folder '/nonexistent' does not exist"
    (tmp_path / "empty").mkdir()
    result = _set_parameter(
        probe,
        "inference.model_dir",
        ParameterValue(type=string, string_value=str(tmp_path / "empty")),
    )
    assert not result.successful and "holds no manifest.json" in result.reason


def test_a_parameter_file_of_the_wrong_type_stops_the_node_naming_it(
    tmp_path: Path, model_dir: Path
) -> None:
    params = write_params(tmp_path / "p.yaml", model_dir, **{"detector.max_faces": "ten"})
    process = start_node(params)
    process.wait(timeout=60)
    output = node_output(process)
    assert process.returncode == 2, output
    assert "detector.max_faces must be an integer, got the string 'ten'" in output
