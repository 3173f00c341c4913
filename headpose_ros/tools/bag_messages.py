"""rosbags message types and conversions for the bag tool (no rclpy, no ROS install needed).

rosbags messages are plain dataclasses that need *every* field; :func:`make_message` fills
the ones a conversion does not set with ROS defaults from the type's field definitions, so
the conversions below read like the ROS node's. The project's own messages are registered
from the ``headpose_msgs/msg/*.msg`` files of the installed share directory or the source tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from headpose_ros.core.geometry import rotation_to_quaternion
from headpose_ros.core.image_codec import decode_compressed_image, decode_raw_image
from headpose_ros.core.metric_pose import CameraModel, camera_from_intrinsics
from headpose_ros.core.model_paths import share_dir_candidates
from headpose_ros.core.pipeline import FrameResult
from headpose_ros.core.visualization import MarkerSpec

__all__ = [
    "COMPRESSED_IMAGE",
    "FACE_ARRAY",
    "IMAGE",
    "MARKER_ARRAY",
    "POSE_ARRAY",
    "build_typestore",
    "camera_from_info",
    "decode_image_message",
    "face_array_message",
    "headpose_msg_dir",
    "make_message",
    "marker_array_message",
    "pose_array_message",
    "quaternion_to_rotation",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
FACE_ARRAY = "headpose_msgs/msg/FaceArray"
POSE_ARRAY = "geometry_msgs/msg/PoseArray"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
_MSG_PACKAGE = "headpose_msgs"

_BASE_DEFAULTS = {"string": "", "bool": False, "float32": 0.0, "float64": 0.0}
_NUMPY_TYPES = {
    "bool": np.bool_,
    "int8": np.int8,
    "uint8": np.uint8,
    "byte": np.uint8,
    "char": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}
_MARKER_TYPES = {"arrow": 0, "line_list": 5, "sphere_list": 7, "text": 9}
_MARKER_ADD, _MARKER_DELETE = 0, 2


def headpose_msg_dir() -> Path:
    """Folder of headpose_msgs' .msg files: installed share dir first, else the source tree."""
    candidates = [folder / "msg" for folder in share_dir_candidates(_MSG_PACKAGE)]
    candidates.append(Path(__file__).resolve().parents[2] / _MSG_PACKAGE / "msg")
    for folder in candidates:
        if (folder / "FaceArray.msg").is_file():
            return folder
    raise FileNotFoundError(
        f"headpose_msgs .msg files not found in {[str(c) for c in candidates]}"
    )


def build_typestore(bag_connections: list[Any] = ()) -> Typestore:
    """ROS 2 Kilted types + headpose_msgs + any message types defined only inside the bag."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(headpose_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{_MSG_PACKAGE}/msg/{path.stem}"))
    for connection in bag_connections:
        if connection.msgtype not in store.fielddefs and connection.msgdef.data:
            try:
                types.update(get_types_from_msg(connection.msgdef.data, connection.msgtype))
            except Exception:  # noqa: BLE001 - an unparsable definition is only copied, not decoded
                continue
    store.register(types)
    return store


def _default(store: Typestore, node: tuple) -> Any:
    kind, detail = node
    if kind == 1:  # BASE
        name = detail[0]
        return _BASE_DEFAULTS.get(name, 0)
    if kind == 2:  # NAME (nested message)
        return make_message(store, detail)
    if kind == 3:  # fixed-size ARRAY
        inner, length = detail
        if inner[0] == 1 and inner[1][0] in _NUMPY_TYPES:
            return np.zeros(length, dtype=_NUMPY_TYPES[inner[1][0]])
        return [_default(store, inner) for _ in range(length)]
    inner = detail[0]  # SEQUENCE
    if inner[0] == 1 and inner[1][0] in _NUMPY_TYPES:
        return np.zeros(0, dtype=_NUMPY_TYPES[inner[1][0]])
    return []


def make_message(store: Typestore, msgtype: str, **fields: Any) -> Any:
    """Build a ``msgtype`` message with ``fields`` set and every other field at its default."""
    _, definition = store.fielddefs[msgtype]
    values = {
        name: fields[name] if name in fields else _default(store, node)
        for name, node in definition
    }
    unknown = set(fields) - {name for name, _ in definition}
    if unknown:
        raise ValueError(f"{msgtype} has no fields {sorted(unknown)}")
    return store.types[msgtype](**values)


def decode_image_message(msg: Any, msgtype: str) -> np.ndarray:
    """Image or CompressedImage -> BGR array (ImageDecodeError on malformed data)."""
    if msgtype == COMPRESSED_IMAGE:
        return decode_compressed_image(msg.format, msg.data)
    return decode_raw_image(
        msg.encoding,
        int(msg.height),
        int(msg.width),
        int(msg.step),
        bool(msg.is_bigendian),
        msg.data,
    )


def camera_from_info(msg: Any) -> CameraModel:
    """CameraInfo -> validated intrinsics (IntrinsicsError for zero/NaN K)."""
    return camera_from_intrinsics(
        np.asarray(msg.k, dtype=np.float64), np.asarray(msg.d, dtype=np.float64)
    )


def quaternion_to_rotation(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Convert a unit quaternion (x, y, z, w) to a 3x3 rotation matrix."""
    q = np.array([x, y, z, w], dtype=np.float64)
    x, y, z, w = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _pose(store: Typestore, rotation: np.ndarray, position: np.ndarray) -> Any:
    qx, qy, qz, qw = rotation_to_quaternion(rotation)
    point = make_message(
        store,
        "geometry_msgs/msg/Point",
        x=float(position[0]),
        y=float(position[1]),
        z=float(position[2]),
    )
    quaternion = make_message(store, "geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw)
    return make_message(store, "geometry_msgs/msg/Pose", position=point, orientation=quaternion)


def face_array_message(store: Typestore, frame: FrameResult, header: Any, scheme: str) -> Any:
    """Our FaceArray for one frame (field meanings in headpose_msgs/msg/Face.msg)."""
    faces = []
    for face in frame.faces:
        x0, y0, x1, y1 = face.box
        box = make_message(
            store,
            "headpose_msgs/msg/BoundingBox2D",
            center_x=(x0 + x1) / 2,
            center_y=(y0 + y1) / 2,
            size_x=x1 - x0,
            size_y=y1 - y0,
        )
        landmarks = []
        if face.landmarks is not None and face.visibility is not None:
            landmarks = [
                make_message(
                    store,
                    "headpose_msgs/msg/Landmark2D",
                    x=float(x),
                    y=float(y),
                    visibility=float(v),
                )
                for (x, y), v in zip(face.landmarks, face.visibility, strict=True)
            ]
        faces.append(
            make_message(
                store,
                "headpose_msgs/msg/Face",
                id=face.track_id,
                box=box,
                detection_score=float(face.score),
                yaw=float(face.yaw),
                pitch=float(face.pitch),
                roll=float(face.roll),
                pose=_pose(store, face.rotation, face.position),
                position_is_metric=bool(face.metric),
                landmark_scheme=scheme if landmarks else "",
                landmarks=landmarks,
                attention=float(face.attention),
            )
        )
    return make_message(
        store,
        FACE_ARRAY,
        header=header,
        image_width=frame.image_width,
        image_height=frame.image_height,
        faces=faces,
    )


def pose_array_message(store: Typestore, frame: FrameResult, header: Any) -> Any:
    """PoseArray of every face's head pose, in the order of the FaceArray."""
    return make_message(
        store,
        POSE_ARRAY,
        header=header,
        poses=[_pose(store, f.rotation, f.position) for f in frame.faces],
    )


def _colour(store: Typestore, rgba: tuple[float, ...]) -> Any:
    r, g, b, a = (float(v) for v in rgba)
    return make_message(store, "std_msgs/msg/ColorRGBA", r=r, g=g, b=b, a=a)


def marker_array_message(store: Typestore, specs: list[MarkerSpec], header: Any) -> Any:
    """MarkerArray from the core's message-free marker descriptions."""
    markers = []
    for spec in specs:
        if spec.kind == "delete":
            markers.append(
                make_message(
                    store,
                    "visualization_msgs/msg/Marker",
                    header=header,
                    ns=spec.namespace,
                    id=spec.marker_id,
                    action=_MARKER_DELETE,
                )
            )
            continue
        position = make_message(
            store,
            "geometry_msgs/msg/Point",
            x=spec.position[0],
            y=spec.position[1],
            z=spec.position[2],
        )
        identity = make_message(store, "geometry_msgs/msg/Quaternion", w=1.0)
        markers.append(
            make_message(
                store,
                "visualization_msgs/msg/Marker",
                header=header,
                ns=spec.namespace,
                id=spec.marker_id,
                type=_MARKER_TYPES[spec.kind],
                action=_MARKER_ADD,
                pose=make_message(
                    store, "geometry_msgs/msg/Pose", position=position, orientation=identity
                ),
                scale=make_message(
                    store,
                    "geometry_msgs/msg/Vector3",
                    x=spec.scale[0],
                    y=spec.scale[1],
                    z=spec.scale[2],
                ),
                color=_colour(store, spec.colour),
                points=[
                    make_message(store, "geometry_msgs/msg/Point", x=p[0], y=p[1], z=p[2])
                    for p in spec.points
                ],
                colors=[_colour(store, c) for c in spec.colours],
                text=spec.text,
            )
        )
    return make_message(store, MARKER_ARRAY, markers=markers)
