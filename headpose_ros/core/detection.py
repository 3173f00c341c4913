"""Face detection behind a small interface, plus validation of boxes given from outside.

The estimator only needs "boxes with scores for this image"; keeping the detector behind
:class:`FaceDetector` lets the node take boxes from an upstream topic instead, and lets a
better detector replace MediaPipe without touching tracking or inference.

Boxes are ``(x0, y0, x1, y1)`` in image pixels (x right, y down), in the *landmark-box*
convention: the bounding rectangle of the 68 landmarks, which is what the model's crop rule
(``crop.square_box_from_face_box``) was trained on. Each detector converts its own box
convention to that one (see :data:`MEDIAPIPE_TO_LANDMARK_BOX`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import cv2
import numpy as np

from headpose_ros.core.config import ConfigError, DetectorConfig

__all__ = [
    "MEDIAPIPE_TO_LANDMARK_BOX",
    "BoxCalibration",
    "Detection",
    "FaceDetector",
    "MediaPipeFaceDetector",
    "create_detector",
    "detections_from_boxes",
    "filter_detections",
]


@dataclass(frozen=True)
class Detection:
    """One face: box in landmark-box convention (image pixels) and a confidence in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class BoxCalibration:
    """Affine map from a detector's box to the landmark box, relative to the detector box.

    landmark-box centre = detector centre + (dx, dy) * detector size;
    landmark-box size = detector size * (sx, sy).
    """

    dx: float
    dy: float
    sx: float
    sy: float

    def apply(
        self, x0: float, y0: float, x1: float, y1: float
    ) -> tuple[float, float, float, float]:
        """Detector box -> landmark box."""
        width, height = x1 - x0, y1 - y0
        cx = (x0 + x1) / 2.0 + self.dx * width
        cy = (y0 + y1) / 2.0 + self.dy * height
        half_w, half_h = width * self.sx / 2.0, height * self.sy / 2.0
        return (cx - half_w, cy - half_h, cx + half_w, cy + half_h)


#: Per MediaPipe ``model_selection``; fitted by ``benchmarks/bench_detectors.py --calibrate`` on
#: 300-W helen_train (median of the per-face ratios). MediaPipe's box is larger than the
#: landmark box (it includes forehead and cheeks) and centred higher (the landmarks start at the
#: brows), so without this map every crop would be too loose and too high for the model.
MEDIAPIPE_TO_LANDMARK_BOX = {
    0: BoxCalibration(dx=-0.005, dy=0.044, sx=0.941, sy=0.917),
    1: BoxCalibration(dx=0.001, dy=0.082, sx=0.885, sy=0.863),
}


#: External box coordinates beyond this (pixels) are corrupt, not faces.
_MAX_COORDINATE = 1e6
#: Share of a face box that must lie inside the image for the face to be processed.
MIN_INSIDE_FRACTION = 0.25


class FaceDetector(abc.ABC):
    """Finds faces in a BGR image."""

    @abc.abstractmethod
    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in ``image_bgr`` (HxWx3 uint8), best score first, boxes in image pixels."""

    def close(self) -> None:  # noqa: B027 - optional hook, most detectors hold nothing
        """Release native resources (graphs, threads)."""


class MediaPipeFaceDetector(FaceDetector):
    """MediaPipe 0.10.14 BlazeFace through its legacy ``solutions`` API (runs offline).

    Chosen for the measured 100% recall on the annotated faces of helen_test and afw at about
    2 ms per 480x480 image on 2 CPU cores (issue 5); its model ships inside the wheel, so
    nothing is downloaded at run time.
    """

    def __init__(self, config: DetectorConfig) -> None:
        """Build the MediaPipe graph (import is deferred: mediapipe is heavy to import)."""
        try:
            from mediapipe.python.solutions import face_detection
        except ImportError as error:
            raise ConfigError(
                f"detector.backend=mediapipe needs mediapipe 0.10.14 ({error}); install it or "
                "use detector.backend=external with boxes from another detector"
            ) from error

        self._calibration = MEDIAPIPE_TO_LANDMARK_BOX[config.model_selection]
        self._graph = face_detection.FaceDetection(
            model_selection=config.model_selection, min_detection_confidence=config.min_score
        )

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Run BlazeFace on the RGB image and map its relative boxes to landmark boxes."""
        height, width = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        result = self._graph.process(rgb)
        detections: list[Detection] = []
        for found in result.detections or []:
            rel = found.location_data.relative_bounding_box
            x0, y0 = rel.xmin * width, rel.ymin * height
            box = self._calibration.apply(x0, y0, x0 + rel.width * width, y0 + rel.height * height)
            detections.append(Detection(box=box, score=float(found.score[0])))
        detections.sort(key=lambda d: -d.score)
        return detections

    def close(self) -> None:
        """Close the MediaPipe graph and its worker threads."""
        self._graph.close()


def detections_from_boxes(
    boxes: np.ndarray, scores: np.ndarray | None = None
) -> tuple[list[Detection], int]:
    """Validate externally given ``(N, 4)`` boxes; return the usable ones and how many were bad.

    Boxes with non-finite or absurd (beyond a million pixels) values or non-positive size are
    rejected (the caller counts them) rather than raising, because one bad box from an upstream
    detector must not cost the other faces of the frame.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return [], 0
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            f"face boxes must have shape (N, 4) as (x0, y0, x1, y1), got {array.shape}"
        )
    score_values = np.ones(len(array)) if scores is None else np.asarray(scores, dtype=np.float64)
    if score_values.shape != (len(array),):
        raise ValueError(
            f"need one score per box, got {score_values.shape} for {len(array)} boxes"
        )
    sane = np.all(np.isfinite(array) & (np.abs(array) < _MAX_COORDINATE), axis=1)
    good = sane & (array[:, 2] > array[:, 0]) & (array[:, 3] > array[:, 1])
    detections = [
        Detection(
            box=tuple(float(v) for v in box), score=float(np.clip(np.nan_to_num(score), 0.0, 1.0))
        )
        for box, score in zip(array[good], score_values[good], strict=True)
    ]
    detections.sort(key=lambda d: -d.score)
    return detections, int((~good).sum())


def filter_detections(
    detections: list[Detection], width: int, height: int, min_face_px: float
) -> tuple[list[Detection], list[tuple[str, str]]]:
    """Keep the faces worth a crop; say why each other one was dropped.

    Returns the kept detections and ``(reason, detail)`` per dropped one: ``face_too_small``
    (shorter side below ``min_face_px``: too few pixels for landmarks) or
    ``face_outside_image`` (less than :data:`MIN_INSIDE_FRACTION` of the box in the image).
    """
    kept: list[Detection] = []
    dropped: list[tuple[str, str]] = []
    for detection in detections:
        x0, y0, x1, y1 = detection.box
        if min(x1 - x0, y1 - y0) < min_face_px:
            dropped.append(("face_too_small", f"{x1 - x0:.0f}x{y1 - y0:.0f} px"))
            continue
        inside = max(0.0, min(x1, width) - max(x0, 0.0)) * max(0.0, min(y1, height) - max(y0, 0.0))
        if inside < MIN_INSIDE_FRACTION * (x1 - x0) * (y1 - y0):
            dropped.append(("face_outside_image", f"box {tuple(round(v) for v in detection.box)}"))
            continue
        kept.append(detection)
    return kept, dropped


def create_detector(config: DetectorConfig) -> FaceDetector | None:
    """Build the configured detector; ``None`` for ``backend: external`` (boxes from outside)."""
    if config.backend == "mediapipe":
        return MediaPipeFaceDetector(config)
    return None
