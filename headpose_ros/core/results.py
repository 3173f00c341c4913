"""What one frame gives: the faces found, or why the frame was skipped, and what was counted.

The output contract of :class:`headpose_ros.core.pipeline.HeadPoseEstimator`, read by the
node's messages, the offline tools and the drawing code, and the stable names under which
skips, events and detection are counted (diagnostics and summaries show these keys).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from headpose_ros.core.geometry import rotation_to_quaternion
from headpose_ros.core.metric_pose import CameraModel

__all__ = [
    "DETECTION_COUNTERS",
    "FACE_SKIP_REASONS",
    "FRAME_SKIP_REASONS",
    "STAGES",
    "FaceResult",
    "FrameResult",
]

#: Whole-frame skip reasons (``FrameResult.skip_reason`` and counter keys ``skip:<reason>``).
FRAME_SKIP_REASONS = ("unsupported_image", "empty_image", "image_too_small", "invalid_timestamp")
#: Per-face or per-frame events that drop or degrade a face (counter keys ``event:<reason>``).
FACE_SKIP_REASONS = (
    "invalid_box",
    "face_too_small",
    "face_outside_image",
    "too_many_faces",
    "network_output_not_finite",
    "face_lost",
    "not_a_face",
    "part_of_a_face",
    "invalid_intrinsics",
    "intrinsics_scaled",
    "pnp_failed",
    "timestamp_not_increasing",
    "image_size_changed",
)
#: What detection did, in :attr:`HeadPoseEstimator.counters` (stable names, summed over
#: frames): runs merged (and dropped as stale), faces they found, detections dropped as too
#: small, as no face to the network or as a part of a tracked face, faces beyond
#: ``detector.max_faces``, faces run through the network and faces published.
DETECTION_COUNTERS = (
    "detector_runs",
    "detector_runs_stale",
    "faces_detected",
    "event:face_too_small",
    "event:not_a_face",
    "event:part_of_a_face",
    "event:too_many_faces",
    "faces_tracked",
    "faces_published",
)
#: Stages timed per frame (milliseconds in ``FrameResult.timings_ms``).
STAGES = ("detect", "crop", "mnn", "decode", "or", "pnp", "smooth", "total")


@dataclass(frozen=True)
class FaceResult:
    """One face in one frame, built once and complete.

    Angles are radians: ``yaw``, ``pitch``, ``roll`` are the network's ``p^ED`` relative to
    looking straight into the camera (geometry.py conventions). ``rotation`` is the head frame
    in the camera optical frame (those angles turned onto the face's viewing ray), and
    :attr:`quaternion` the same orientation for messages and TF.
    ``position`` is the head origin in metres when ``metric`` is true, else a unit vector
    along the viewing ray (from nominal intrinsics when none were given). ``landmarks`` are
    (68, 2) image pixels and ``visibility`` (68,) probabilities, ``None`` in encoder-only mode.
    """

    track_id: str
    box: tuple[float, float, float, float]
    score: float
    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray
    position: np.ndarray
    metric: bool
    attention: float
    landmarks: np.ndarray | None
    visibility: np.ndarray | None
    source: str
    cut_by_border: bool
    reprojection_error_px: float = float("nan")
    pose_note: str = ""

    @cached_property
    def quaternion(self) -> tuple[float, float, float, float]:
        """``rotation`` as a unit quaternion ``(x, y, z, w)``, ``w >= 0``; computed once."""
        return rotation_to_quaternion(self.rotation)


@dataclass
class FrameResult:
    """Everything one frame produced: faces, or why the frame was skipped, and timings.

    What detection did: ``detector_ran`` (detections or the caller's boxes entered tracking),
    ``faces_detected``, of those ``faces_too_small`` (below ``detector.min_face_px``), tracks
    left out by ``detector.max_faces`` (``faces_over_limit``) and run through the network
    (``faces_tracked``); ``len(faces)`` were published.
    """

    timestamp_ns: int
    image_width: int
    image_height: int
    faces: list[FaceResult] = field(default_factory=list)
    skip_reason: str | None = None
    skip_detail: str = ""
    events: list[str] = field(default_factory=list)
    detector_ran: bool = False
    faces_detected: int = 0
    faces_too_small: int = 0
    faces_over_limit: int = 0
    faces_tracked: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    camera: CameraModel | None = None  # the intrinsics used, fitted to this image
