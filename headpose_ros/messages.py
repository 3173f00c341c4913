"""Estimator results -> ROS messages, written once for every message library.

The node builds rclpy messages and the rosbag tool builds ``rosbags`` messages; both call the
functions here with a *factory*, ``make(type_name, **fields)``, that constructs a message of
that library (:func:`rclpy_factory`, :func:`rosbags_factory`). The functions themselves import
no message package and need no running ROS, so they are tested as plain functions.

Conventions (see headpose_msgs/msg/Face.msg): positions in metres in the image's optical frame;
a face without intrinsics gets a *unit* position along its viewing ray and
``position_is_metric = false``; every output reuses the input image's header.
"""

from __future__ import annotations

import array
import importlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from headpose_ros.core.geometry import rotation_to_quaternion
from headpose_ros.core.metric_pose import CameraModel
from headpose_ros.core.pipeline import FaceResult, FrameResult
from headpose_ros.core.visualization import MarkerSpec, marker_specs

__all__ = [
    "MessageFactory",
    "face_array_message",
    "face_message",
    "face_transforms",
    "main_face",
    "marker_array_message",
    "message_class",
    "pose_array_message",
    "pose_message",
    "pose_stamped_message",
    "rclpy_factory",
    "rclpy_image_message",
    "rosbags_factory",
]

MessageFactory = Callable[..., Any]


def message_class(type_name: str) -> type:
    """Import the rclpy class of ``pkg/msg/Name`` (ImportError/AttributeError if unknown)."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def rclpy_factory(type_name: str, **fields: Any) -> Any:
    """Build an rclpy message (``"pkg/msg/Name"``); unspecified fields keep their defaults."""
    return message_class(type_name)(**fields)


def rclpy_image_message(header: Any, image_bgr: np.ndarray) -> Any:
    """sensor_msgs/Image (bgr8) of an HxWx3 uint8 image, for rclpy.

    The pixels go in as an ``array.array``: given ``bytes``, the generated setter checks every
    byte in Python, about 10 ms for one VGA frame, which is more than the whole estimate.
    """
    pixels = array.array("B")
    pixels.frombytes(np.ascontiguousarray(image_bgr, dtype=np.uint8).data)
    message = message_class("sensor_msgs/msg/Image")(
        header=header,
        height=image_bgr.shape[0],
        width=image_bgr.shape[1],
        encoding="bgr8",
        step=image_bgr.shape[1] * 3,
    )
    message.data = pixels
    return message


def rosbags_factory(typestore: Any) -> MessageFactory:
    """Make a factory for ``rosbags`` messages of ``typestore`` that fills unspecified fields.

    rosbags' message classes are dataclasses without defaults; this fills every field that is
    not given with the zero value the ROS IDL defines (0, "", empty sequence, nested default).
    """
    base_dtypes = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "float32": np.float32,
                   "float64": np.float64, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
                   "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
                   "int64": np.int64, "uint64": np.uint64}  # fmt: skip

    def zero(kind: Any, detail: Any) -> Any:
        name = getattr(kind, "name", str(kind))
        if name == "BASE":
            base = detail[0]
            return "" if base in ("string", "wstring") else base_dtypes[base](0).item()
        if name == "NAME":
            return make(detail)
        (inner_kind, inner_detail), length = detail
        if getattr(inner_kind, "name", "") == "BASE" and inner_detail[0] in base_dtypes:
            return np.zeros(length if name == "ARRAY" else 0, dtype=base_dtypes[inner_detail[0]])
        return [zero(inner_kind, inner_detail) for _ in range(length if name == "ARRAY" else 0)]

    def make(type_name: str, **fields: Any) -> Any:
        _, definitions = typestore.fielddefs[type_name]
        values = {
            field: fields[field] if field in fields else zero(kind, detail)
            for field, (kind, detail) in definitions
        }
        return typestore.types[type_name](**values)

    return make


def _point(make: MessageFactory, xyz: Iterable[float]) -> Any:
    x, y, z = (float(v) for v in xyz)
    return make("geometry_msgs/msg/Point", x=x, y=y, z=z)


def _colour(make: MessageFactory, rgba: tuple[float, float, float, float]) -> Any:
    r, g, b, a = (float(v) for v in rgba)
    return make("std_msgs/msg/ColorRGBA", r=r, g=g, b=b, a=a)


def pose_message(make: MessageFactory, face: FaceResult) -> Any:
    """geometry_msgs/Pose of the head frame in the optical frame (unit ray if not metric)."""
    x, y, z, w = rotation_to_quaternion(face.rotation)
    orientation = make("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)
    return make(
        "geometry_msgs/msg/Pose", position=_point(make, face.position), orientation=orientation
    )


def face_message(make: MessageFactory, face: FaceResult, landmark_scheme: str) -> Any:
    """headpose_msgs/Face for one estimated face."""
    x0, y0, x1, y1 = (float(v) for v in face.box)
    box = make(
        "headpose_msgs/msg/BoundingBox2D",
        center_x=(x0 + x1) / 2.0,
        center_y=(y0 + y1) / 2.0,
        size_x=x1 - x0,
        size_y=y1 - y0,
    )
    landmarks = []
    if face.landmarks is not None and face.visibility is not None:
        landmarks = [
            make("headpose_msgs/msg/Landmark2D", x=float(x), y=float(y), visibility=float(v))
            for (x, y), v in zip(face.landmarks, face.visibility, strict=True)
        ]
    return make(
        "headpose_msgs/msg/Face",
        id=face.track_id,
        box=box,
        detection_score=float(face.score),
        yaw=float(face.yaw),
        pitch=float(face.pitch),
        roll=float(face.roll),
        pose=pose_message(make, face),
        position_is_metric=bool(face.metric),
        landmark_scheme=landmark_scheme if landmarks else "",
        landmarks=landmarks,
        attention=float(face.attention),
    )


def face_array_message(
    make: MessageFactory, header: Any, frame: FrameResult, landmark_scheme: str
) -> Any:
    """headpose_msgs/FaceArray: every face of the frame under the input image's header."""
    return make(
        "headpose_msgs/msg/FaceArray",
        header=header,
        image_width=int(frame.image_width),
        image_height=int(frame.image_height),
        faces=[face_message(make, face, landmark_scheme) for face in frame.faces],
    )


def main_face(frame: FrameResult) -> FaceResult | None:
    """Pick the face a single-person consumer should follow: the largest (closest) one."""
    if not frame.faces:
        return None
    return max(frame.faces, key=lambda f: ((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), f.score))


def pose_stamped_message(make: MessageFactory, header: Any, face: FaceResult) -> Any:
    """geometry_msgs/PoseStamped of one face."""
    return make("geometry_msgs/msg/PoseStamped", header=header, pose=pose_message(make, face))


def pose_array_message(make: MessageFactory, header: Any, frame: FrameResult) -> Any:
    """geometry_msgs/PoseArray of all faces, in the order of the FaceArray."""
    return make(
        "geometry_msgs/msg/PoseArray",
        header=header,
        poses=[pose_message(make, face) for face in frame.faces],
    )


#: visualization_msgs/Marker type for each MarkerSpec kind, and the two actions used.
_MARKER_TYPES = {"arrow": 0, "line_list": 5, "sphere_list": 7, "text": 9}
_ADD, _DELETE = 0, 2


def _marker(make: MessageFactory, header: Any, spec: MarkerSpec) -> Any:
    pose = make(
        "geometry_msgs/msg/Pose",
        position=_point(make, spec.position),
        orientation=make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0),
    )
    sx, sy, sz = (float(v) for v in spec.scale)
    return make(
        "visualization_msgs/msg/Marker",
        header=header,
        ns=spec.namespace,
        id=spec.marker_id,
        type=_MARKER_TYPES.get(spec.kind, 0),
        action=_DELETE if spec.kind == "delete" else _ADD,
        pose=pose,
        scale=make("geometry_msgs/msg/Vector3", x=sx, y=sy, z=sz),
        color=_colour(make, spec.colour),
        points=[_point(make, p) for p in spec.points],
        colors=[_colour(make, c) for c in spec.colours],
        text=spec.text,
    )


def marker_array_message(
    make: MessageFactory,
    header: Any,
    frame: FrameResult,
    camera: CameraModel | None,
    previous_ids: Iterable[str] = (),
) -> tuple[Any, set[str]]:
    """visualization_msgs/MarkerArray for rviz, and the face ids it shows.

    The geometry (head axes, attention arrow coloured red -> green, landmarks coloured by
    visibility, a label; DELETE markers for faces gone since ``previous_ids``) comes from
    :func:`headpose_ros.core.visualization.marker_specs`; this only turns it into messages.
    """
    specs, shown = marker_specs(frame, camera, set(previous_ids))
    markers = [_marker(make, header, spec) for spec in specs]
    return make("visualization_msgs/msg/MarkerArray", markers=markers), shown


#: Gaze frame axes in the head frame (REP-155: z forward, x right, y down, i.e. optical style).
_HEAD_FROM_GAZE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _transform(
    make: MessageFactory, header: Any, child: str, rotation: np.ndarray, origin: np.ndarray
) -> Any:
    x, y, z, w = rotation_to_quaternion(rotation)
    translation = make(
        "geometry_msgs/msg/Vector3", x=float(origin[0]), y=float(origin[1]), z=float(origin[2])
    )
    return make(
        "geometry_msgs/msg/TransformStamped",
        header=header,
        child_frame_id=child,
        transform=make(
            "geometry_msgs/msg/Transform",
            translation=translation,
            rotation=make("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w),
        ),
    )


def face_transforms(make: MessageFactory, header: Any, frame: FrameResult) -> list[Any]:
    """TF frames ``face_<id>`` (head frame) and ``gaze_<id>`` for every face with metric pose.

    Only metric faces get frames: a TF frame claims a position, and without intrinsics the
    distance to the face is unknown.
    """
    transforms = []
    for face in frame.faces:
        if face.metric:
            transforms.append(
                _transform(make, header, f"face_{face.track_id}", face.rotation, face.position)
            )
            transforms.append(
                _transform(
                    make,
                    header,
                    f"gaze_{face.track_id}",
                    face.rotation @ _HEAD_FROM_GAZE,
                    face.position,
                )
            )
    return transforms
