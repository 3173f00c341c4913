"""Marker geometry, colours and annotated images from synthetic face results."""

from __future__ import annotations

import numpy as np
import pytest

from headpose_ros.core.geometry import euler_to_matrix
from headpose_ros.core.metric_pose import camera_from_intrinsics, ray_rotation
from headpose_ros.core.results import FaceResult, FrameResult
from headpose_ros.core.visualization import (
    NOMINAL_DEPTH_M,
    attention_colour,
    draw_frame,
    marker_specs,
    visibility_colour,
)

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])


def face(track_id: str, yaw: float, metric: bool) -> FaceResult:
    position = np.array([0.1, 0.0, 1.0])
    rotation = ray_rotation(position) @ euler_to_matrix(yaw, 0.0, 0.0)
    landmarks = np.column_stack([np.linspace(300, 400, 68), np.linspace(200, 300, 68)])
    return FaceResult(
        track_id=track_id,
        box=(300.0, 200.0, 400.0, 300.0),
        score=0.9,
        yaw=yaw,
        pitch=0.0,
        roll=0.0,
        rotation=rotation,
        position=position if metric else position / np.linalg.norm(position),
        metric=metric,
        attention=float(1 - abs(yaw) / (np.pi / 2)),
        landmarks=landmarks,
        visibility=np.linspace(0, 1, 68),
        source="detector",
        cut_by_border=False,
    )


def test_colours_run_from_red_to_green() -> None:
    assert attention_colour(0.0) == (1.0, 0.0, 0.0)
    assert attention_colour(1.0) == (0.0, 1.0, 0.0)
    assert attention_colour(0.5) == (1.0, 1.0, 0.0)
    assert attention_colour(float("nan")) == (1.0, 0.0, 0.0)
    assert visibility_colour(1.0) == (0.0, 1.0, 0.0) and visibility_colour(0.0) == (1.0, 0.0, 0.0)


def test_marker_geometry_follows_the_head() -> None:
    camera = camera_from_intrinsics(K)
    frame = FrameResult(0, 640, 480, faces=[face("1", 0.0, True), face("2", 0.5, False)])
    specs, _ = marker_specs(frame, camera, set())
    by_kind = {(s.namespace, s.kind): s for s in specs}
    arrow = by_kind[("face_1", "arrow")]
    start, end = np.array(arrow.points)
    np.testing.assert_allclose(start, [0.1, 0.0, 1.0])
    # Facing the camera: the attention arrow points back along the viewing ray.
    forward = end - start
    np.testing.assert_allclose(
        forward / np.linalg.norm(forward), -start / np.linalg.norm(start), atol=1e-9
    )
    assert arrow.colour == (0.0, 1.0, 0.0, 1.0)
    # Landmarks lie on the plane through the head, at the head's depth, where K projects them.
    landmarks = np.array(by_kind[("face_1", "sphere_list")].points)
    assert np.allclose(landmarks[:, 2], 1.0)
    projected = landmarks[:, :2] / landmarks[:, 2:] * 500.0 + [320.0, 240.0]
    np.testing.assert_allclose(projected, frame.faces[0].landmarks, atol=1e-6)
    # A face of unknown distance is drawn at the nominal depth along its ray.
    non_metric = np.array(by_kind[("face_2", "arrow")].points[0])
    assert non_metric[2] == pytest.approx(NOMINAL_DEPTH_M)
    assert by_kind[("face_2", "text")].text.startswith("2 y+29")


def test_marker_specs_delete_faces_that_left() -> None:
    frame = FrameResult(
        timestamp_ns=0,
        image_width=640,
        image_height=480,
        faces=[face("1", 0.2, True), face("2", -0.3, True)],
    )
    specs, shown = marker_specs(frame, camera_from_intrinsics(K), set())
    assert shown == {"1", "2"}
    assert {(s.namespace, s.kind) for s in specs} >= {
        ("face_1", "arrow"),
        ("face_2", "text"),
        ("face_1", "sphere_list"),
    }
    frame.faces = frame.faces[:1]
    specs, shown = marker_specs(frame, None, shown)
    deleted = {(s.namespace, s.marker_id) for s in specs if s.kind == "delete"}
    assert shown == {"1"} and deleted == {("face_2", i) for i in range(4)}


def test_draw_frame_marks_faces_and_skips() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    frame = FrameResult(
        timestamp_ns=0, image_width=640, image_height=480, faces=[face("7", 0.0, False)]
    )
    canvas = draw_frame(image, frame)
    assert canvas.shape == image.shape and image.max() == 0  # input untouched
    assert canvas[195:305, 295:405].any() and not canvas[:100, :100].any()
    skipped = draw_frame(
        image,
        FrameResult(timestamp_ns=0, image_width=640, image_height=480, skip_reason="empty_image"),
    )
    assert skipped.any()
