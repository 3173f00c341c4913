"""Estimator results <-> ROS messages, written once for every message library.

The node builds rclpy messages and the rosbag tool builds ``rosbags`` messages; both call the
functions here with a *factory*, ``make(type_name, **fields)``, that constructs a message of
that library (:func:`rclpy_factory`, :func:`rosbags_factory`). Reading goes the other way with
the same functions for both libraries, since their messages have the same field names: each
inbound conversion sits beside its outbound twin (as ``sensor_msgs_py.point_cloud2`` keeps
``read_points`` beside ``create_cloud``). Nothing here imports a message package or needs a
running ROS, so every conversion is tested as a plain function.

:func:`frame_messages` builds the whole set of messages for one frame (faces, main pose, all
poses, markers, TF frames); the node publishes it and the bag tool writes it.

Conventions (see headpose_msgs/msg/Face.msg): positions in metres in the image's optical frame;
a face without intrinsics gets a *unit* position along its viewing ray and
``position_is_metric = false``; every output reuses the input image's header.
"""

from __future__ import annotations

import array
import importlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from headpose_ros.core.config import SettingSpec
from headpose_ros.core.geometry import rotation_to_quaternion
from headpose_ros.core.image_codec import (
    DEFAULT_MAX_PIXELS,
    decode_compressed_image,
    decode_raw_image,
)
from headpose_ros.core.metric_pose import CameraModel, camera_from_intrinsics
from headpose_ros.core.results import FaceResult, FrameResult
from headpose_ros.core.visualization import MarkerSpec, marker_specs

__all__ = [
    "OUTPUT_TOPICS",
    "FrameMessages",
    "MessageFactory",
    "box_from_message",
    "box_message",
    "camera_from_info",
    "camera_info_message",
    "face_array_message",
    "face_boxes_from_message",
    "frame_messages",
    "image_from_message",
    "main_face_index",
    "marker_array_message",
    "message_class",
    "parameter_descriptor",
    "rclpy_factory",
    "rclpy_image_message",
    "rosbags_factory",
    "stamp_ns",
    "time_message",
]

MessageFactory = Callable[..., Any]
#: Per-frame topics :func:`frame_messages` can build, besides the TF frames.
OUTPUT_TOPICS = ("faces", "pose", "poses", "markers")


# ------------------------------------------------------------------ message libraries
def message_class(type_name: str) -> type:
    """Import the rclpy class of ``pkg/msg/Name`` (ImportError/AttributeError if unknown)."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def rclpy_factory(type_name: str, **fields: Any) -> Any:
    """Build an rclpy message (``"pkg/msg/Name"``); unspecified fields keep their defaults."""
    return message_class(type_name)(**fields)


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


# ------------------------------------------------------------------ what inbound messages hold
class _Time(Protocol):
    sec: int
    nanosec: int


class _Header(Protocol):
    stamp: _Time
    frame_id: str


class RawImageFields(Protocol):
    """The fields of sensor_msgs/Image that decoding reads (rclpy or rosbags)."""

    header: _Header
    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


class CompressedImageFields(Protocol):
    """The fields of sensor_msgs/CompressedImage that decoding reads."""

    header: _Header
    format: str
    data: Any


class _RegionOfInterest(Protocol):
    x_offset: int
    y_offset: int
    width: int
    height: int


class CameraInfoFields(Protocol):
    """The fields of sensor_msgs/CameraInfo that intrinsics are built from."""

    header: _Header
    width: int
    height: int
    distortion_model: str
    d: Sequence[float]
    k: Sequence[float]
    binning_x: int
    binning_y: int
    roi: _RegionOfInterest


class _Box(Protocol):
    center_x: float
    center_y: float
    size_x: float
    size_y: float


class _BoxedFace(Protocol):
    box: _Box
    detection_score: float


class FaceArrayFields(Protocol):
    """The fields of headpose_msgs/FaceArray that upstream boxes are read from."""

    header: _Header
    faces: Sequence[_BoxedFace]


# ------------------------------------------------------------------ stamps
def time_message(make: MessageFactory, nanoseconds: int) -> Any:
    """builtin_interfaces/Time of a stamp in nanoseconds."""
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def stamp_ns(header: _Header) -> int:
    """Return a header's stamp in nanoseconds (inverse of :func:`time_message`)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# ------------------------------------------------------------------ images
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


def image_from_message(
    message: RawImageFields | CompressedImageFields, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> HxWx3 uint8 BGR (inverse of the above).

    Images declaring more than ``max_pixels`` are refused before anything is decoded. Raises
    :class:`~headpose_ros.core.image_codec.ImageDecodeError` with the reason.
    """
    if hasattr(message, "format"):
        return decode_compressed_image(message.format, message.data, max_pixels)
    return decode_raw_image(
        message.encoding,
        int(message.height),
        int(message.width),
        int(message.step),
        bool(message.is_bigendian),
        message.data,
        max_pixels,
    )


# ------------------------------------------------------------------ camera intrinsics
def camera_info_message(make: MessageFactory, header: Any, camera: CameraModel) -> Any:
    """sensor_msgs/CameraInfo of intrinsics (for images of the camera's size, no ROI)."""
    k = np.asarray(camera.matrix, dtype=np.float64)
    return make(
        "sensor_msgs/msg/CameraInfo",
        header=header,
        width=int(camera.width),
        height=int(camera.height),
        distortion_model=camera.model,
        d=np.asarray(camera.distortion, dtype=np.float64),
        k=k.ravel(),
        r=np.eye(3).ravel(),
        p=np.column_stack([k, np.zeros(3)]).ravel(),
    )


def camera_from_info(message: CameraInfoFields) -> CameraModel:
    """CameraInfo -> validated intrinsics (inverse of :func:`camera_info_message`).

    The distortion model, the calibrated size, binning and region of interest are all taken
    into account; the result describes the images the driver sends. Raises
    :class:`~headpose_ros.core.metric_pose.IntrinsicsError` with the reason (an all-zero K is
    what an uncalibrated driver sends; an unknown distortion model is refused).
    """
    roi = message.roi
    return camera_from_intrinsics(
        np.asarray(message.k, dtype=np.float64),
        np.asarray(message.d, dtype=np.float64),
        str(message.distortion_model),
        size=(int(message.width), int(message.height)),
        binning=(int(message.binning_x), int(message.binning_y)),
        roi=(int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)),
    )


# ------------------------------------------------------------------ faces
def box_message(make: MessageFactory, box: Sequence[float]) -> Any:
    """headpose_msgs/BoundingBox2D (centre and size) of an (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return make(
        "headpose_msgs/msg/BoundingBox2D",
        center_x=(x0 + x1) / 2.0,
        center_y=(y0 + y1) / 2.0,
        size_x=x1 - x0,
        size_y=y1 - y0,
    )


def box_from_message(box: _Box) -> np.ndarray:
    """(x0, y0, x1, y1) of a BoundingBox2D (inverse of :func:`box_message`)."""
    half_x, half_y = box.size_x / 2.0, box.size_y / 2.0
    return np.array(
        [
            box.center_x - half_x,
            box.center_y - half_y,
            box.center_x + half_x,
            box.center_y + half_y,
        ],
        dtype=np.float64,
    )


def face_boxes_from_message(message: FaceArrayFields) -> tuple[np.ndarray, np.ndarray]:
    """Upstream FaceArray -> ``(N, 4)`` boxes (x0, y0, x1, y1) and ``(N,)`` detection scores.

    The inverse of the box and score that :func:`face_array_message` writes.
    """
    boxes = np.array([box_from_message(f.box) for f in message.faces]).reshape(-1, 4)
    scores = np.array([f.detection_score for f in message.faces], dtype=np.float64)
    return boxes, scores


def _point(make: MessageFactory, xyz: Iterable[float]) -> Any:
    x, y, z = (float(v) for v in xyz)
    return make("geometry_msgs/msg/Point", x=x, y=y, z=z)


def _quaternion(make: MessageFactory, xyzw: Sequence[float]) -> Any:
    x, y, z, w = (float(v) for v in xyzw)
    return make("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


def _colour(make: MessageFactory, rgba: tuple[float, float, float, float]) -> Any:
    r, g, b, a = (float(v) for v in rgba)
    return make("std_msgs/msg/ColorRGBA", r=r, g=g, b=b, a=a)


def _face_message(make: MessageFactory, face: FaceResult, landmark_scheme: str, pose: Any) -> Any:
    """headpose_msgs/Face for one estimated face, with its already built Pose."""
    landmarks = []
    if face.landmarks is not None and face.visibility is not None:
        landmarks = [
            make("headpose_msgs/msg/Landmark2D", x=float(x), y=float(y), visibility=float(v))
            for (x, y), v in zip(face.landmarks, face.visibility, strict=True)
        ]
    return make(
        "headpose_msgs/msg/Face",
        id=face.track_id,
        box=box_message(make, face.box),
        detection_score=float(face.score),
        yaw=float(face.yaw),
        pitch=float(face.pitch),
        roll=float(face.roll),
        pose=pose,
        position_is_metric=bool(face.metric),
        landmark_scheme=landmark_scheme if landmarks else "",
        landmarks=landmarks,
        attention=float(face.attention),
    )


def face_array_message(
    make: MessageFactory,
    header: Any,
    frame: FrameResult,
    landmark_scheme: str,
    poses: Sequence[Any],
) -> Any:
    """headpose_msgs/FaceArray: every face of the frame under the input image's header.

    ``poses`` are the faces' geometry_msgs/Pose, built once per frame by
    :func:`frame_messages` and shared with the pose topics.
    """
    return make(
        "headpose_msgs/msg/FaceArray",
        header=header,
        image_width=int(frame.image_width),
        image_height=int(frame.image_height),
        faces=[
            _face_message(make, face, landmark_scheme, pose)
            for face, pose in zip(frame.faces, poses, strict=True)
        ],
    )


def main_face_index(frame: FrameResult) -> int | None:
    """Index of the face a single-person consumer should follow: the largest (closest) one."""
    ranks = [((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), f.score) for f in frame.faces]
    return max(range(len(ranks)), key=ranks.__getitem__) if ranks else None


# ------------------------------------------------------------------ markers
#: visualization_msgs/Marker type for each MarkerSpec kind, and the two actions used.
_MARKER_TYPES = {"arrow": 0, "line_list": 5, "sphere_list": 7, "text": 9}
_ADD, _DELETE = 0, 2
_IDENTITY = (0.0, 0.0, 0.0, 1.0)


def _marker(make: MessageFactory, header: Any, spec: MarkerSpec) -> Any:
    pose = make(
        "geometry_msgs/msg/Pose",
        position=_point(make, spec.position),
        orientation=_quaternion(make, _IDENTITY),
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


# ------------------------------------------------------------------ TF
def _quaternion_product(a: Sequence[float], b: Sequence[float]) -> tuple[float, ...]:
    """Hamilton product ``a * b`` of (x, y, z, w) quaternions: rotation ``a`` after ``b``."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


#: Gaze frame axes in the head frame (REP-155: z forward, x right, y down, i.e. optical style).
_GAZE_IN_HEAD = rotation_to_quaternion(
    np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
)


def _transform(
    make: MessageFactory,
    header: Any,
    child: str,
    xyzw: Sequence[float],
    origin: np.ndarray,
) -> Any:
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
            rotation=_quaternion(make, xyzw),
        ),
    )


def _face_transforms(
    make: MessageFactory, header: Any, face: FaceResult, xyzw: Sequence[float]
) -> list[Any]:
    """TF frames ``face_<id>`` (head frame) and ``gaze_<id>`` of a face with metric pose.

    Only metric faces get frames: a TF frame claims a position, and without intrinsics the
    distance to the face is unknown.
    """
    if not face.metric:
        return []
    gaze = _quaternion_product(xyzw, _GAZE_IN_HEAD)
    return [
        _transform(make, header, f"face_{face.track_id}", xyzw, face.position),
        _transform(make, header, f"gaze_{face.track_id}", gaze, face.position),
    ]


# ------------------------------------------------------------------ one frame's messages
@dataclass
class FrameMessages:
    """Every message of one frame: by output topic, the TF frames, and the faces drawn."""

    topics: dict[str, Any] = field(default_factory=dict)
    transforms: list[Any] = field(default_factory=list)
    shown_ids: set[str] = field(default_factory=set)


def frame_messages(
    make: MessageFactory,
    header: Any,
    frame: FrameResult,
    landmark_scheme: str,
    camera: CameraModel | None,
    shown_ids: Iterable[str] = (),
    topics: Collection[str] = OUTPUT_TOPICS,
    transforms: bool = False,
) -> FrameMessages:
    """Build a frame's messages for the wanted ``topics`` (of :data:`OUTPUT_TOPICS`).

    ``faces`` (FaceArray), ``pose`` (PoseStamped of the main face; left out when there is no
    face), ``poses`` (PoseArray, in ``faces`` order) and ``markers`` (MarkerArray, with
    deletions of the faces in ``shown_ids`` that are gone), plus the TF frames when
    ``transforms``. Each face's quaternion and Pose are built once and shared by all of them.
    ``shown_ids`` of the result is what to pass for the next frame.
    """
    quaternions = [rotation_to_quaternion(face.rotation) for face in frame.faces]
    poses = [
        make(
            "geometry_msgs/msg/Pose",
            position=_point(make, face.position),
            orientation=_quaternion(make, xyzw),
        )
        for face, xyzw in zip(frame.faces, quaternions, strict=True)
    ]
    result = FrameMessages(shown_ids=set(shown_ids))
    if "faces" in topics:
        result.topics["faces"] = face_array_message(make, header, frame, landmark_scheme, poses)
    main = main_face_index(frame)
    if "pose" in topics and main is not None:
        result.topics["pose"] = make(
            "geometry_msgs/msg/PoseStamped", header=header, pose=poses[main]
        )
    if "poses" in topics:
        result.topics["poses"] = make("geometry_msgs/msg/PoseArray", header=header, poses=poses)
    if "markers" in topics:
        result.topics["markers"], result.shown_ids = marker_array_message(
            make, header, frame, camera, result.shown_ids
        )
    if transforms:
        for face, xyzw in zip(frame.faces, quaternions, strict=True):
            result.transforms += _face_transforms(make, header, face, xyzw)
    return result


# ------------------------------------------------------------------ parameters
#: rcl_interfaces/ParameterType values of the schema's Python types.
_PARAMETER_TYPES = {bool: 1, int: 2, float: 3, str: 4}


def parameter_descriptor(make: MessageFactory, spec: SettingSpec) -> Any:
    """rcl_interfaces/ParameterDescriptor carrying a setting's description and allowed values.

    ``dynamic_typing`` is set: the type check is left to the node's own, clearer one.
    """
    fields: dict[str, Any] = {
        "name": spec.name,
        "type": _PARAMETER_TYPES[spec.type],
        "description": spec.description,
        # The node checks types itself, to name the parameter and say the types in words
        # (rclpy's own message is "expected '3' got '4'").
        "dynamic_typing": True,
    }
    ranges = {
        int: ("integer_range", "IntegerRange"),
        float: ("floating_point_range", "FloatingPointRange"),
    }
    if spec.type in ranges and spec.low is not None and spec.high is not None:
        field_name, type_name = ranges[spec.type]
        low, high = spec.type(spec.low), spec.type(spec.high)
        fields[field_name] = [
            make(
                f"rcl_interfaces/msg/{type_name}", from_value=low, to_value=high, step=spec.type(0)
            )
        ]
    if spec.choices:
        fields["additional_constraints"] = f"one of: {', '.join(spec.choices)}"
    return make("rcl_interfaces/msg/ParameterDescriptor", **fields)
