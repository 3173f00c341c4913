"""One input message of the node to an estimated frame, every problem counted and explained.

:class:`FrameIntake` is what the node (:mod:`headpose_ros.node`) does with each Image or
CompressedImage, CameraInfo and upstream FaceArray, without ROS: messages come in duck-typed
and are read by :mod:`headpose_ros.messages` (the same conversions as the bag tool), so it is
tested as plain Python with real estimators (``test/test_frame_intake.py``,
``test/test_hostile_corpus.py``). Each rejected frame is counted under its reason, each
estimator event (too_many_faces, image_size_changed...) and each face left without a metric
position under why, so ``/diagnostics`` accounts for every degraded result, and a
:class:`~headpose_ros.node_support.ReasonLog` describes each distinct problem.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from headpose_ros.core.image_codec import ImageDecodeError
from headpose_ros.core.metric_pose import CameraModel, IntrinsicsError
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.core.results import DETECTION_COUNTERS, FrameResult
from headpose_ros.messages import (
    camera_from_info,
    face_boxes_from_message,
    image_from_message,
    stamp_ns,
)
from headpose_ros.node_config import InputConfig
from headpose_ros.node_support import NodeStats, ReasonLog

__all__ = ["FrameIntake", "ProcessedFrame"]


class _ExternalBoxes:
    """Face boxes from an upstream detector, kept briefly and matched to images by stamp."""

    def __init__(self, keep: int = 30) -> None:
        self._lock = threading.Lock()
        self._entries: collections.deque[tuple[int, np.ndarray, np.ndarray]] = collections.deque(
            maxlen=keep
        )

    def add(self, stamp: int, boxes: np.ndarray, scores: np.ndarray) -> None:
        with self._lock:
            self._entries.append((stamp, boxes, scores))

    def nearest(self, stamp: int, max_age_ns: float) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            candidates = [entry for entry in self._entries if abs(entry[0] - stamp) <= max_age_ns]
        if not candidates:
            return None
        _, boxes, scores = min(candidates, key=lambda entry: abs(entry[0] - stamp))
        return boxes, scores


@dataclass(frozen=True)
class ProcessedFrame:
    """An estimated frame and what publishing it needs: its header and image."""

    header: Any
    frame: FrameResult
    image: np.ndarray


#: Why faces are not metric when the intrinsics, not the faces, are the cause.
_NO_CAMERA_INFO = "no camera_info received"


class FrameIntake:
    """One input message to an estimated, published frame; every problem counted and logged.

    Called from the subscription callbacks (CameraInfo, upstream boxes) and the worker
    (images, :meth:`handle`); ``publish`` sends a frame's results. Each rejected frame is
    counted under its reason, each estimator event (too_many_faces, image_size_changed...) and
    each face left without a metric position under why, so that ``/diagnostics`` accounts for
    every degraded result; ``log`` describes each distinct problem.
    """

    def __init__(
        self,
        estimator: HeadPoseEstimator,
        settings: InputConfig,
        stats: NodeStats,
        publish: Callable[[ProcessedFrame], None],
        log: ReasonLog,
    ) -> None:
        self._estimator = estimator
        self._settings = settings
        self._stats = stats
        self._publish = publish
        self._log = log
        # (intrinsics or None, their frame_id, why there are none): replaced as a whole by the
        # CameraInfo callback, read as a whole by the worker.
        self._camera: tuple[CameraModel | None, str, str] = (None, "", _NO_CAMERA_INFO)
        self._boxes = _ExternalBoxes()

    def on_camera_info(self, message: Any) -> None:
        """Keep the latest valid intrinsics; invalid ones disable metric pose until fixed."""
        self._stats.count("camera_info received")
        try:
            self._camera = (camera_from_info(message), message.header.frame_id, "")
        except IntrinsicsError as error:
            self._stats.count(f"camera_info rejected: {error.reason}")
            self._log.report("camera_info", f"camera_info rejected: {error}")
            self._camera = (None, message.header.frame_id, f"camera_info rejected: {error}")

    def describe(self) -> dict[str, str]:
        """Device, model, the intrinsics in use (or why none) and what detection did so far.

        The detection totals (``results.DETECTION_COUNTERS``: detector runs, faces
        detected, dropped as too small, as no face or as parts of a tracked face, over
        ``max_faces``, tracked, published) say whether faces were missed, which the published
        faces alone cannot show.
        """
        camera, _, why = self._camera
        if camera is not None:
            fx, fy = camera.matrix[0, 0], camera.matrix[1, 1]
            size = f"{camera.width}x{camera.height}" if camera.width else "any size"
            why = f"fx {fx:.1f} fy {fy:.1f}, {camera.model}, {size}"
        estimator = self._estimator
        detection = {
            f"detection: {name.removeprefix('event:')}": str(estimator.counters[name])
            for name in DETECTION_COUNTERS
        }
        return {
            "device": estimator.device,
            "precision": estimator.precision,
            "model": estimator.manifest.name,
            "camera": why,
            **detection,
        }

    def on_face_boxes(self, message: Any) -> None:
        """Keep an upstream FaceArray's boxes for the image with the nearest stamp."""
        self._boxes.add(stamp_ns(message.header), *face_boxes_from_message(message))

    def handle(self, message: Any) -> None:
        """Decode, estimate and publish one Image/CompressedImage, or count why not."""
        started = time.perf_counter()
        processed = self._process(message)
        if processed is not None:
            self._publish(processed)
            latency_ms = (time.perf_counter() - started) * 1e3
            self._stats.frame_processed(len(processed.frame.faces), latency_ms)

    def failed(self, error: Exception) -> None:
        """Count and report a frame that raised (a bug; the worker goes on with the next)."""
        self._stats.frame_rejected("processing_error")
        self._log.report("error", f"frame failed: {type(error).__name__}: {error}")

    def _process(self, message: Any) -> ProcessedFrame | None:
        self._stats.frame_taken()
        camera, camera_frame, no_camera = self._camera
        try:
            image = image_from_message(message, self._estimator.config.max_image_pixels)
        except ImageDecodeError as error:
            self._stats.frame_rejected(error.reason)
            self._log.report("image", f"image rejected: {error}")
            return None
        header = message.header
        if camera is not None and camera_frame and camera_frame != header.frame_id:
            self._log.report(
                "camera_info",
                f"camera_info frame '{camera_frame}' differs from image frame '{header.frame_id}'",
            )
        stamp = stamp_ns(header)
        boxes, scores = self._boxes_for(stamp)
        frame = self._estimator.estimate(
            image, stamp, camera=camera, boxes=boxes, box_scores=scores
        )
        if frame.skip_reason is not None:
            self._stats.frame_rejected(frame.skip_reason)
            self._log.report("image", f"frame skipped, {frame.skip_reason}: {frame.skip_detail}")
            return None
        for event in frame.events:
            self._stats.count(f"event: {event.split(':')[0]}")
            self._log.report("event", event)
        for face in frame.faces:
            if not face.metric:
                self._stats.count(f"faces not metric: {self._why_not_metric(frame, no_camera)}")
        return ProcessedFrame(header, frame, image)

    @staticmethod
    def _why_not_metric(frame: FrameResult, no_camera: str) -> str:
        """Return a short, countable reason (the full one is in the log)."""
        if no_camera:
            return no_camera.split(":")[0]  # "no camera_info received", "camera_info rejected"
        if frame.camera is None:
            return "camera_info does not fit the image"
        return "no metric solution"

    def _boxes_for(self, stamp: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self._settings.external_boxes:
            return None, None
        found = self._boxes.nearest(stamp, self._settings.external_boxes_max_age_s * 1e9)
        if found is None:
            self._stats.count("frames without external boxes")
            return np.zeros((0, 4)), np.zeros(0)
        return found
