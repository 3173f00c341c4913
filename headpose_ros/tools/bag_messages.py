"""rosbags type store for the bag tool (no rclpy, no ROS install needed).

Message conversions in both directions are shared with the node in
:mod:`headpose_ros.messages` (through its ``rosbags_factory``); this module adds what only the
bag tool needs: a type store that knows the project's own messages, registered from the
``headpose_msgs/msg/*.msg`` files of the installed share directory or the source tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from headpose_ros.core.model_paths import share_dir_candidates

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED_IMAGE",
    "FACE_ARRAY",
    "IMAGE",
    "MARKER_ARRAY",
    "POSE_ARRAY",
    "POSE_STAMPED",
    "build_typestore",
    "headpose_msg_dir",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
FACE_ARRAY = "headpose_msgs/msg/FaceArray"
POSE_ARRAY = "geometry_msgs/msg/PoseArray"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
_MSG_PACKAGE = "headpose_msgs"


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
