"""What results look like: annotated images and the geometry of rviz markers.

Pure functions over :class:`~headpose_ros.core.pipeline.FaceResult` (no message types), so
the ROS node's MarkerArray, the rosbag tool's markers and the offline tools' annotated images
draw the same axes, arrow and colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from headpose_ros.core.metric_pose import CameraModel, nominal_camera
from headpose_ros.core.results import FaceResult, FrameResult

__all__ = [
    "AXIS_COLOURS_RGB",
    "MarkerSpec",
    "attention_colour",
    "draw_frame",
    "face_label",
    "marker_namespace",
    "marker_specs",
    "visibility_colour",
]

#: Head axes x (forward), y (left), z (up) in red, green, blue: the REP-103 / rviz convention.
AXIS_COLOURS_RGB = ((1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.1, 0.3, 1.0))


def attention_colour(score: float) -> tuple[float, float, float]:
    """RGB in [0, 1]: red (looking away, 0) through yellow (0.5) to green (looking at us, 1)."""
    s = float(np.clip(np.nan_to_num(score), 0.0, 1.0))
    return (min(1.0, 2.0 * (1.0 - s)), min(1.0, 2.0 * s), 0.0)


def visibility_colour(visibility: float) -> tuple[float, float, float]:
    """RGB in [0, 1]: green for a visible landmark, red for an occluded one, blended between."""
    v = float(np.clip(np.nan_to_num(visibility), 0.0, 1.0))
    return (1.0 - v, v, 0.0)


def face_label(face: FaceResult) -> str:
    """Short text shown next to a face: id, angles in degrees and attention."""
    yaw, pitch, roll = np.rad2deg([face.yaw, face.pitch, face.roll])
    return f"{face.track_id} y{yaw:+.0f} p{pitch:+.0f} r{roll:+.0f} att {face.attention:.2f}"


def _bgr(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return (int(255 * rgb[2]), int(255 * rgb[1]), int(255 * rgb[0]))


def _axes_2d(face: FaceResult) -> tuple[np.ndarray, np.ndarray]:
    """Image points of the head centre and its three axis tips.

    An orthographic view of the optical-frame axes (their x, y components are image x, y) with
    half the box side as length: for drawing, the perspective difference is invisible.
    """
    box = np.asarray(face.box)
    centre = (
        face.landmarks.mean(axis=0) if face.landmarks is not None else (box[:2] + box[2:]) / 2.0
    )
    length = 0.5 * float(np.mean(box[2:] - box[:2]))
    return centre, centre + face.rotation.T[:, :2] * length


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], size: float, bgr: tuple) -> None:
    """Text with a dark outline, legible on any background."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(canvas, text, origin, font, size, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, font, size, bgr, 1, cv2.LINE_AA)


def draw_frame(image_bgr: np.ndarray, frame: FrameResult) -> np.ndarray:
    """Draw box, id, angles, head axes and landmarks of every face on a copy of the image.

    The box colour follows attention (green = looking at the camera); landmarks go from green
    (visible) to red (occluded). A skipped frame gets its skip reason written on it.
    """
    canvas = image_bgr.copy()
    size = (canvas.shape[1], canvas.shape[0])
    scale = max(0.4, min(size) / 800.0)
    thickness = max(1, int(round(2 * scale)))
    if frame.skip_reason:
        _text(canvas, f"skipped: {frame.skip_reason}", (10, int(30 * scale)), scale, (0, 0, 255))
    for face in frame.faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        colour = _bgr(attention_colour(face.attention))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
        _text(canvas, face_label(face), (x0, max(14, y0 - 6)), 0.45 + 0.3 * scale, colour)
        if face.landmarks is not None and face.visibility is not None:
            for (x, y), v in zip(face.landmarks, face.visibility, strict=True):
                cv2.circle(
                    canvas,
                    (int(round(x)), int(round(y))),
                    thickness + 1,
                    _bgr(visibility_colour(v)),
                    -1,
                )
        centre, tips = _axes_2d(face)
        for tip, rgb in zip(tips, AXIS_COLOURS_RGB, strict=True):
            if np.all(np.isfinite(tip)):
                start = (int(round(centre[0])), int(round(centre[1])))
                cv2.arrowedLine(
                    canvas,
                    start,
                    (int(round(tip[0])), int(round(tip[1]))),
                    _bgr(rgb),
                    thickness + 1,
                    tipLength=0.15,
                )
    return canvas


@dataclass(frozen=True)
class MarkerSpec:
    """A message-free description of one rviz marker (visualization_msgs/Marker fields).

    ``kind`` is "arrow", "line_list", "sphere_list", "text" or "delete". Points are in the
    camera optical frame (metres); ``colours`` are per-point RGBA, ``colour`` the marker's.
    """

    namespace: str
    marker_id: int
    kind: str
    points: tuple[tuple[float, float, float], ...] = ()
    colours: tuple[tuple[float, float, float, float], ...] = ()
    colour: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    text: str = ""
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)


#: Markers drawn per face, by id within the face's namespace.
_FACE_MARKER_IDS = {"arrow": 0, "axes": 1, "landmarks": 2, "label": 3}
#: Head axes and attention arrow lengths, and where a face of unknown distance is drawn.
AXIS_LENGTH_M, ARROW_LENGTH_M, NOMINAL_DEPTH_M = 0.1, 0.3, 1.0


def marker_namespace(track_id: str) -> str:
    """Namespace of one face's markers, so they can be deleted together when it disappears."""
    return f"face_{track_id}"


def _point(p: np.ndarray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))


def _face_markers(
    face: FaceResult, camera: CameraModel | None, image_size: tuple[int, int]
) -> list[MarkerSpec]:
    """Markers of one face in the optical frame (metres), straight from the FaceResult.

    Head axes (x, y, z in red, green, blue) and the attention arrow along the forward axis
    start at the head origin; a face without metric position is drawn
    :data:`NOMINAL_DEPTH_M` along its ray. Landmarks are lifted onto the plane through the
    head origin parallel to the image, coloured by visibility; the label floats above the head.
    """
    ns = marker_namespace(face.track_id)
    origin = face.position if face.metric else face.position / face.position[2] * NOMINAL_DEPTH_M
    axes = face.rotation.T  # rows: head x, y, z axes in the optical frame
    axis_points, axis_colours = [], []
    for axis, rgb in zip(axes, AXIS_COLOURS_RGB, strict=True):
        axis_points += [_point(origin), _point(origin + axis * AXIS_LENGTH_M)]
        axis_colours += [(*rgb, 1.0), (*rgb, 1.0)]
    markers = [
        MarkerSpec(
            ns,
            _FACE_MARKER_IDS["arrow"],
            "arrow",
            (_point(origin), _point(origin + axes[0] * ARROW_LENGTH_M)),
            colour=(*attention_colour(face.attention), 1.0),
            scale=(0.015, 0.03, 0.05),
        ),
        MarkerSpec(
            ns,
            _FACE_MARKER_IDS["axes"],
            "line_list",
            tuple(axis_points),
            tuple(axis_colours),
            scale=(0.008, 0.0, 0.0),
        ),
    ]
    if face.landmarks is not None and face.visibility is not None:
        rays = (camera if camera is not None else nominal_camera(*image_size)).normalised(
            face.landmarks
        )
        markers.append(
            MarkerSpec(
                ns,
                _FACE_MARKER_IDS["landmarks"],
                "sphere_list",
                tuple(
                    (float(x * origin[2]), float(y * origin[2]), float(origin[2])) for x, y in rays
                ),
                tuple((*visibility_colour(v), 1.0) for v in face.visibility),
                scale=(0.006, 0.006, 0.006),
            )
        )
    markers.append(
        MarkerSpec(
            ns,
            _FACE_MARKER_IDS["label"],
            "text",
            colour=(1.0, 1.0, 1.0, 1.0),
            scale=(0.0, 0.0, 0.04),
            text=face_label(face),
            position=_point(origin + np.array([0.0, -0.12, 0.0])),  # above the head (y is down)
        )
    )
    return markers


def marker_specs(
    frame: FrameResult, camera: CameraModel | None, previous_ids: set[str]
) -> tuple[list[MarkerSpec], set[str]]:
    """Markers for every face of the frame, deletions for faces gone since the last call.

    Returns the specs and the set of track ids drawn, to pass back as ``previous_ids`` next
    frame: the caller keeps that state so that rviz never shows a stale face.
    """
    size = (max(frame.image_width, 1), max(frame.image_height, 1))
    specs = [spec for face in frame.faces for spec in _face_markers(face, camera, size)]
    current = {face.track_id for face in frame.faces}
    for gone in sorted(previous_ids - current):
        specs += [
            MarkerSpec(marker_namespace(gone), marker_id, "delete")
            for marker_id in _FACE_MARKER_IDS.values()
        ]
    return specs, current
