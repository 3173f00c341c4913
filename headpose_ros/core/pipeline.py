"""The whole per-frame pipeline: detect, track, crop, MNN, decode, OR, metric pose, smooth.

:class:`HeadPoseEstimator` is what the ROS node and the offline tools wrap. It never raises on
a bad frame: every frame gives a :class:`FrameResult`, either with faces or with an explicit
``skip_reason``, and every skipped frame or face is counted in :attr:`HeadPoseEstimator.counters`
under a stable reason key (see :data:`FRAME_SKIP_REASONS` and :data:`FACE_SKIP_REASONS`), so
nothing is lost silently. Problems with the model itself are raised once, at construction, as
:class:`~headpose_ros.core.manifest.ModelFileError` naming the file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from headpose_ros.core.config import EstimatorConfig, validate_config
from headpose_ros.core.crop import (
    apply_affine,
    crop_affine,
    crop_image,
    invert_affine,
    square_box_from_face_box,
    to_network_input,
)
from headpose_ros.core.decoding import decode_heatmaps
from headpose_ros.core.detection import (
    Detection,
    FaceDetector,
    create_detector,
    detections_from_boxes,
)
from headpose_ros.core.geometry import CROP_FOCAL_FACTOR, attention_score
from headpose_ros.core.inference import LoadedModel, ModelRunner, NetworkOutputs, load_model
from headpose_ros.core.metric_pose import (
    CameraModel,
    IntrinsicsError,
    MetricPose,
    camera_from_intrinsics,
    nominal_camera,
    orientation_from_network,
    ray_rotation,
    solve_metric_pose,
)
from headpose_ros.core.occlusion_regressor import OcclusionRegressor, initial_shape
from headpose_ros.core.smoothing import OneEuroFilter
from headpose_ros.core.tracking import FaceTracker, Track

__all__ = [
    "FACE_SKIP_REASONS",
    "FRAME_SKIP_REASONS",
    "STAGES",
    "FaceResult",
    "FrameResult",
    "HeadPoseEstimator",
    "prepare_image",
]

_LOG = logging.getLogger(__name__)

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
    "invalid_intrinsics",
    "intrinsics_scaled",
    "pnp_failed",
    "timestamp_not_increasing",
    "image_size_changed",
)
#: Stages timed per frame (milliseconds in ``FrameResult.timings_ms``).
STAGES = ("detect", "crop", "mnn", "decode", "or", "pnp", "smooth", "total")

#: Mean heatmap peak (as a multiple of a flat map's value) below which a tracked face counts
#: as lost for the frame. Measured with the shipped model on 128 px crops: 100-150 on 300-W
#: faces, 75 or more with the lower half of the face covered, about 30 on a blank crop and 60
#: on noise; the network's visibility cannot tell (0.75 on a blank crop).
MIN_FACE_PRESENCE = 65.0
#: A face whose landmark box differs from its crop's box by more than this factor in size, or
#: this share of its side in position, is cropped again and re-run in the same frame.
RECROP_SCALE = 1.2
RECROP_SHIFT = 0.15
#: Share of a face box that must lie inside the image for the face to be processed.
_MIN_INSIDE_FRACTION = 0.25
#: Smoothed vector layout: yaw, pitch, roll (angles), then position (3), then 68x2 landmarks.
_ANGLE_COUNT = 3


@dataclass
class FaceResult:
    """One face in one frame.

    Angles are radians: ``yaw``, ``pitch``, ``roll`` are the network's ``p^ED`` relative to
    looking straight into the camera (geometry.py conventions). ``rotation`` is the head frame
    in the camera optical frame (those angles turned onto the face's viewing ray).
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


@dataclass
class FrameResult:
    """Everything one frame produced: faces, or why the frame was skipped, and timings."""

    timestamp_ns: int
    image_width: int
    image_height: int
    faces: list[FaceResult] = field(default_factory=list)
    skip_reason: str | None = None
    skip_detail: str = ""
    events: list[str] = field(default_factory=list)
    detector_ran: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    camera: CameraModel | None = None  # the intrinsics used, fitted to this image


def prepare_image(image: object, min_side: int) -> tuple[np.ndarray | None, str | None, str]:
    """Validate and normalise an input frame to contiguous HxWx3 uint8 BGR.

    Accepts grey (HxW or HxWx1), BGR and BGRA uint8 arrays with any strides. Returns
    ``(image, None, "")`` or ``(None, reason, detail)`` with a reason from
    :data:`FRAME_SKIP_REASONS`.
    """
    if not isinstance(image, np.ndarray):
        return None, "unsupported_image", f"expected a numpy array, got {type(image).__name__}"
    if image.dtype != np.uint8:
        return None, "unsupported_image", f"expected uint8 pixels, got {image.dtype}"
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        return (
            None,
            "unsupported_image",
            f"expected HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}",
        )
    if image.size == 0:
        return None, "empty_image", f"image has zero size {image.shape}"
    if min(image.shape[:2]) < min_side:
        return (
            None,
            "image_too_small",
            f"image {image.shape[1]}x{image.shape[0]} is below {min_side} px",
        )
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image), None, ""


class _Timer:
    """Accumulates milliseconds per stage for one frame."""

    def __init__(self) -> None:
        self.times = dict.fromkeys(STAGES, 0.0)
        self._start = time.perf_counter()
        self._mark = self._start

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] += (now - self._mark) * 1000.0
        self._mark = now

    def skip(self) -> None:
        self._mark = time.perf_counter()

    def finish(self) -> dict[str, float]:
        self.times["total"] = (time.perf_counter() - self._start) * 1000.0
        return self.times


@dataclass
class _FaceWork:
    """A track being processed this frame, with its crop transform."""

    track: Track
    affine: np.ndarray
    side: float
    cut_by_border: bool


class HeadPoseEstimator:
    """Head pose, landmarks, visibility and attention for every face of a video stream.

    Construct once (loads and validates the model, builds the detector), then call
    :meth:`estimate` for each frame in time order. ``detector`` replaces the configured one
    with any :class:`FaceDetector`; boxes from an upstream detector are passed to
    :meth:`estimate` instead.
    """

    def __init__(
        self, config: EstimatorConfig | None = None, detector: FaceDetector | None = None
    ) -> None:
        """Load the model and the OR; raise ModelFileError/ConfigError on a bad setup."""
        self.config = validate_config(config or EstimatorConfig())
        self.model: LoadedModel = load_model(self.config.inference)
        self.manifest = self.model.manifest
        self.runner = ModelRunner(self.model, self.config.inference)
        self.regressor: OcclusionRegressor | None = None
        if (
            self.config.inference.use_or
            and not self.config.inference.encoder_only
            and "or" in self.model.files
        ):
            self.regressor = OcclusionRegressor.load(
                self.model.files["or"], self.manifest.mean_face_m
            )
        self.detector = detector if detector is not None else create_detector(self.config.detector)
        self.tracker = FaceTracker(self.config.tracking)
        self.counters: Counter[str] = Counter()
        self._filters: dict[str, OneEuroFilter] = {}
        self._frames_since_detection = 0
        self._last_timestamp_ns: int | None = None
        self._last_size: tuple[int, int] | None = None
        self._logged_reasons: set[str] = set()
        self._warm_up()

    @property
    def device(self) -> str:
        """The onnxruntime device actually used (``cpu``, ``cuda:0``, ...)."""
        return self.runner.device

    def _warm_up(self) -> None:
        """One dummy batch (and OR call), so the first real frame is not slowed by lazy init."""
        size = self.manifest.input_size
        outputs = self.runner.run(np.zeros((1, 3, size, size), dtype=np.float32))
        if self.regressor is not None and outputs.heatmaps is not None:
            self.regressor.refine(
                outputs.heatmaps, outputs.pose_ae, outputs.visibility, float(size)
            )

    def reset(self) -> None:
        """Forget tracks, filters and time (a new, unrelated image sequence starts)."""
        self.tracker.reset()
        self._filters.clear()
        self._frames_since_detection = 0
        self._last_timestamp_ns = None
        self._last_size = None

    def close(self) -> None:
        """Release the detector's native resources."""
        if self.detector is not None:
            self.detector.close()

    def _event(self, result: FrameResult, reason: str, detail: str = "", count: int = 1) -> None:
        """Count a skip or degradation; log the first of each kind as a warning."""
        self.counters[f"event:{reason}"] += count
        result.events.append(f"{reason}: {detail}" if detail else reason)
        level = logging.DEBUG if reason in self._logged_reasons else logging.WARNING
        self._logged_reasons.add(reason)
        _LOG.log(level, "%s %s (further ones are counted, logged at debug level)", reason, detail)

    def estimate(
        self,
        image_bgr: object,
        timestamp_ns: int,
        camera: CameraModel | tuple[np.ndarray, np.ndarray] | None = None,
        boxes: np.ndarray | None = None,
        box_scores: np.ndarray | None = None,
    ) -> FrameResult:
        """Process one frame.

        ``camera``: a :class:`CameraModel`, raw ``(K, D)`` (validated here: bad intrinsics give
        an ``invalid_intrinsics`` event and orientation-only results), or ``None``.
        ``boxes``: optional ``(N, 4)`` face boxes from outside (landmark-box convention); when
        given they replace this frame's own detector run.
        """
        timer = _Timer()
        self.counters["frames"] += 1
        image, reason, detail = prepare_image(image_bgr, self.config.min_image_side)
        try:
            timestamp_ns = int(timestamp_ns)
        except (TypeError, ValueError, OverflowError):
            image, reason, detail = None, "invalid_timestamp", f"timestamp {timestamp_ns!r}"
            timestamp_ns = 0
        shape = getattr(image_bgr, "shape", ())
        height, width = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (0, 0)
        result = FrameResult(
            timestamp_ns=int(timestamp_ns), image_width=width, image_height=height
        )
        if image is None:
            self.counters[f"skip:{reason}"] += 1
            result.skip_reason, result.skip_detail = reason, detail
            self._log_skip(reason, detail)
            result.timings_ms = timer.finish()
            return result
        if self._last_timestamp_ns is not None and timestamp_ns <= self._last_timestamp_ns:
            self._event(
                result,
                "timestamp_not_increasing",
                f"{timestamp_ns} after {self._last_timestamp_ns}",
            )
        self._last_timestamp_ns = int(timestamp_ns)
        if self._last_size not in (None, image.shape[:2]):
            # Another stream or a resized one: tracked boxes no longer mean anything here.
            self._event(result, "image_size_changed", f"{self._last_size} -> {image.shape[:2]}")
            self.tracker.reset()
            self._filters.clear()
        self._last_size = image.shape[:2]
        camera_model = result.camera = self._camera(camera, result)

        self.tracker.begin_frame()
        self._detect(image, boxes, box_scores, result)
        timer.lap("detect")
        work = self._crops_to_run(result)
        if work:
            crops = np.stack([crop_image(image, w.affine, self.manifest.input_size) for w in work])
            batch = to_network_input(crops, self.manifest.normalisation)
            timer.lap("crop")
            outputs = self.runner.run(batch)
            work, outputs = self._recrop(image, work, outputs, result)
            timer.lap("mnn")
            result.faces = self._faces(work, outputs, camera_model, (width, height), result, timer)
        lost = self.tracker.end_frame()
        reported = {t.track_id for t in self.tracker.tracks if t.confirmed}
        result.faces = [f for f in result.faces if f.track_id in reported]
        self._frames_since_detection = (
            0 if result.detector_ran else self._frames_since_detection + 1
        )
        if lost:
            live = {t.track_id for t in self.tracker.tracks}
            self._filters = {k: v for k, v in self._filters.items() if k in live}
        self.counters["faces"] += len(result.faces)
        self.counters["frames_with_faces" if result.faces else "frames_without_faces"] += 1
        result.timings_ms = timer.finish()
        return result

    def _log_skip(self, reason: str, detail: str) -> None:
        level = logging.DEBUG if reason in self._logged_reasons else logging.WARNING
        self._logged_reasons.add(reason)
        _LOG.log(level, "frame skipped, %s: %s", reason, detail)

    def _camera(self, camera: object, result: FrameResult) -> CameraModel | None:
        """Return the intrinsics for this image: validated, scaled for a resized image."""
        if camera is None:
            return None
        try:
            if not isinstance(camera, CameraModel):
                matrix, distortion = camera  # type: ignore[misc]
                camera = camera_from_intrinsics(matrix, distortion)
            camera, note = camera.for_image(result.image_width, result.image_height)
        except (IntrinsicsError, TypeError, ValueError) as error:
            self._event(result, "invalid_intrinsics", str(error))
            return None
        if note:
            self._event(result, "intrinsics_scaled", note)
        return camera

    def _detect(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None,
        scores: np.ndarray | None,
        result: FrameResult,
    ) -> None:
        """Run the detector (or take the given boxes) when tracking needs it."""
        if boxes is not None:
            try:
                detections, bad = detections_from_boxes(boxes, scores)
            except ValueError as error:
                self._event(
                    result, "invalid_box", str(error), count=max(1, int(np.size(boxes) // 4))
                )
                detections, bad = [], 0
            if bad:
                self._event(
                    result, "invalid_box", f"{bad} external box(es) non-finite or empty", count=bad
                )
            source = "external"
        else:
            due = (
                self.tracker.needs_detection
                or self._frames_since_detection + 1 >= self.config.detector.interval_frames
            )
            if self.detector is None or not due:
                return
            detections, source = self.detector.detect(image), "detector"
            self.counters["detector_runs"] += 1
        result.detector_ran = True
        kept = self._filter_detections(detections, image.shape[1], image.shape[0], result)
        self.tracker.update_with_detections(kept, source)

    def _filter_detections(
        self, detections: list[Detection], width: int, height: int, result: FrameResult
    ) -> list[Detection]:
        kept = []
        for detection in detections:
            x0, y0, x1, y1 = detection.box
            if min(x1 - x0, y1 - y0) < self.config.detector.min_face_px:
                self._event(result, "face_too_small", f"{x1 - x0:.0f}x{y1 - y0:.0f} px")
                continue
            inside = max(0.0, min(x1, width) - max(x0, 0.0)) * max(
                0.0, min(y1, height) - max(y0, 0.0)
            )
            if inside < _MIN_INSIDE_FRACTION * (x1 - x0) * (y1 - y0):
                self._event(
                    result, "face_outside_image", f"box {tuple(round(v) for v in detection.box)}"
                )
                continue
            kept.append(detection)
        return kept

    def _crops_to_run(self, result: FrameResult) -> list[_FaceWork]:
        """Crop transforms of the tracks to process, at most ``max_faces`` of them."""
        limit = self.config.detector.max_faces
        tracks = sorted(self.tracker.tracks, key=lambda t: (not t.confirmed, -t.score))
        if len(tracks) > limit:
            self._event(
                result,
                "too_many_faces",
                f"{len(tracks)} faces, processing {limit}",
                count=len(tracks) - limit,
            )
        work = [self._work_for(track, track.box, result) for track in tracks[:limit]]
        return [item for item in work if item is not None]

    def _work_for(self, track: Track, box: np.ndarray, result: FrameResult) -> _FaceWork | None:
        """Crop transform for a face box (landmark-box convention); None for an invalid box."""
        x0, y0, x1, y1 = (float(v) for v in box)
        try:
            square = square_box_from_face_box(x0, y0, x1, y1, self.manifest.crop_margin)
        except ValueError as error:
            self._event(result, "invalid_box", str(error))
            return None
        half = square.side / 2.0
        cut = (
            square.cx - half < 0
            or square.cy - half < 0
            or square.cx + half > result.image_width
            or square.cy + half > result.image_height
        )
        return _FaceWork(track, crop_affine(square, self.manifest.input_size), square.side, cut)

    def _recrop(
        self,
        image: np.ndarray,
        work: list[_FaceWork],
        outputs: NetworkOutputs,
        result: FrameResult,
    ) -> tuple[list[_FaceWork], NetworkOutputs]:
        """Run again, in one batch, the faces whose landmarks say the crop missed them.

        After a fast move or zoom the crop taken from last frame's landmarks shows the face
        off-centre or at the wrong scale, and the network's answer is poor. When this frame's
        landmark box differs from the crop's box by more than :data:`RECROP_SCALE` in size or
        :data:`RECROP_SHIFT` of its side in position, the face is cropped around the new
        landmarks and run once more. Steady tracking never triggers it.
        """
        if outputs.heatmaps is None:
            return work, outputs
        landmarks, _ = decode_heatmaps(outputs.heatmaps, float(self.manifest.input_size))
        redo: list[tuple[int, _FaceWork]] = []
        for index, item in enumerate(work):
            points = apply_affine(landmarks[index], invert_affine(item.affine))
            if not np.all(np.isfinite(points)):
                continue
            new_box = np.concatenate([points.min(axis=0), points.max(axis=0)])
            old_box = np.asarray(item.track.box, dtype=np.float64)
            old_side = max(float(np.mean(old_box[2:] - old_box[:2])), 1e-6)
            ratio = float(np.mean(new_box[2:] - new_box[:2])) / old_side
            shift = float(
                np.linalg.norm((new_box[:2] + new_box[2:] - old_box[:2] - old_box[2:]) / 2)
            )
            if (
                abs(np.log(max(ratio, 1e-6))) > np.log(RECROP_SCALE)
                or shift > RECROP_SHIFT * old_side
            ):
                again = self._work_for(item.track, new_box, result)
                if again is not None:
                    redo.append((index, again))
        if not redo:
            return work, outputs
        size = self.manifest.input_size
        crops = np.stack([crop_image(image, item.affine, size) for _, item in redo])
        second = self.runner.run(to_network_input(crops, self.manifest.normalisation))
        merged = {
            name: np.array(getattr(outputs, name)) for name in NetworkOutputs.__dataclass_fields__
        }
        work = list(work)
        for row, (index, item) in enumerate(redo):
            work[index] = item
            for name in merged:
                merged[name][index] = getattr(second, name)[row]
        self.counters["recrops"] += len(redo)
        return work, NetworkOutputs(**merged)

    def _landmarks(
        self, outputs: NetworkOutputs, timer: _Timer
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Crop-pixel landmarks (decoded, then OR-refined), visibility and face presence.

        Presence is each face's mean heatmap peak as a multiple of a flat map's value: high
        where the network sees a clear face, low on a blank or noisy crop.
        """
        if outputs.heatmaps is None or outputs.visibility is None:
            return None, None, None
        size = float(self.manifest.input_size)
        landmarks, peaks = decode_heatmaps(outputs.heatmaps, size)
        presence = peaks.mean(axis=1) * float(np.prod(outputs.heatmaps.shape[2:]))
        timer.lap("decode")
        if self.regressor is not None:
            refined = self.regressor.refine(
                outputs.heatmaps, outputs.pose_ae, outputs.visibility, size
            )
            good = np.all(np.isfinite(refined), axis=(1, 2))
            landmarks[good] = refined[good]
            timer.lap("or")
        return landmarks, np.clip(outputs.visibility.astype(np.float64), 0.0, 1.0), presence

    def _faces(
        self,
        work: list[_FaceWork],
        outputs: NetworkOutputs,
        camera: CameraModel | None,
        image_size: tuple[int, int],
        result: FrameResult,
        timer: _Timer,
    ) -> list[FaceResult]:
        crop_landmarks, visibility, presence = self._landmarks(outputs, timer)
        size = float(self.manifest.input_size)
        bearing_camera = camera if camera is not None else nominal_camera(*image_size)
        faces = []
        for index, item in enumerate(work):
            pose_ed = outputs.pose_ed[index].astype(np.float64)
            finite = np.all(np.isfinite(pose_ed))
            if crop_landmarks is not None:
                finite = (
                    finite
                    and np.all(np.isfinite(crop_landmarks[index]))
                    and np.all(np.isfinite(visibility[index]))
                )
            if not finite:
                self._event(result, "network_output_not_finite", f"track {item.track.track_id}")
                self.tracker.update_from_landmarks(
                    item.track, np.full((2, 2), np.nan), reliable=False
                )
                continue
            to_image = invert_affine(item.affine)
            landmarks = vis = None
            if crop_landmarks is not None:
                landmarks = apply_affine(crop_landmarks[index], to_image)
                vis = visibility[index]
                reliable = (
                    float(vis.mean()) >= self.config.tracking.min_track_visibility
                    and presence[index] >= MIN_FACE_PRESENCE
                )
                accepted = self.tracker.update_from_landmarks(item.track, landmarks, reliable)
                why = f"mean visibility {vis.mean():.2f}, presence {presence[index]:.0f}"
            else:
                # Encoder only: the mean face placed by p^AE (the pose trained for exactly this
                # alignment) stands in for landmarks, so the crop still follows the head.
                rigid = initial_shape(outputs.pose_ae[index], self.manifest.mean_face_m, size)
                accepted = self.tracker.update_from_landmarks(
                    item.track, apply_affine(rigid[0], to_image), reliable=True
                )
                why = "p^AE does not place a plausible face"
            if not accepted and not item.track.evidence:
                # Neither the landmarks nor a detection this frame vouch for the face.
                self._event(result, "face_lost", f"track {item.track.track_id}, {why}")
                continue
            timer.skip()
            face = self._pose(item, pose_ed, landmarks, vis, camera, bearing_camera, result)
            timer.lap("pnp")
            if self.config.smoothing.enabled:
                self._smooth(face, result.timestamp_ns)
                timer.lap("smooth")
            max_angle = np.deg2rad(self.config.pose.attention_max_angle_deg)
            face.attention = attention_score(face.rotation, face.position, max_angle)
            faces.append(face)
        return faces

    def _pose(
        self,
        item: _FaceWork,
        pose_ed: np.ndarray,
        landmarks: np.ndarray | None,
        visibility: np.ndarray | None,
        camera: CameraModel | None,
        bearing_camera: CameraModel,
        result: FrameResult,
    ) -> FaceResult:
        """Orientation from ``p^ED`` on the viewing ray; position from PnP or the network."""
        box = item.track.box
        if landmarks is not None:  # the head origin lies between the eyes
            scheme = self.manifest.scheme
            centre = landmarks[list(scheme.right_eye) + list(scheme.left_eye)].mean(axis=0)
        else:
            centre = (box[:2] + box[2:]) / 2.0
        bearing = bearing_camera.bearing(centre)
        rotation = ray_rotation(bearing) @ orientation_from_network(pose_ed)
        position, metric, error, note = bearing, False, float("nan"), "no camera intrinsics"
        if camera is not None and landmarks is not None:
            solved = solve_metric_pose(
                landmarks,
                visibility,
                self.manifest.mean_face_m,
                camera,
                self.config.pose.visibility_threshold,
                self.config.pose.min_pnp_points,
            )
            if isinstance(solved, MetricPose):
                position, metric, error, note = (
                    solved.translation,
                    True,
                    solved.reprojection_error_px,
                    "pnp",
                )
            else:
                self._event(result, "pnp_failed", f"track {item.track.track_id}: {solved}")
                note = f"pnp failed ({solved}); "
        if camera is not None and not metric:
            # Encoder-only mode, or PnP failed: the network's own translation still gives a
            # metric position, less precise than PnP of visible landmarks.
            fallback = self._network_position(item, pose_ed, camera)
            if fallback is not None:
                position, metric = fallback, True
                note = f"{note if landmarks is not None else ''}network translation"
        yaw, pitch, roll = np.deg2rad(pose_ed[:3])
        return FaceResult(
            track_id=item.track.track_id,
            box=tuple(float(v) for v in box),
            score=float(item.track.score),
            yaw=float(yaw),
            pitch=float(pitch),
            roll=float(roll),
            rotation=rotation,
            position=np.asarray(position, dtype=np.float64),
            metric=metric,
            attention=float("nan"),
            landmarks=landmarks,
            visibility=visibility,
            source=item.track.source,
            cut_by_border=item.cut_by_border,
            reprojection_error_px=error,
            pose_note=note,
        )

    def _network_position(
        self, item: _FaceWork, pose_ed: np.ndarray, camera: CameraModel
    ) -> np.ndarray | None:
        """Metric position from the network: the crop camera's translation seen by the camera.

        The crop camera has focal ``1.5 * S`` crop pixels for a crop of ``side`` image pixels,
        i.e. ``1.5 * side`` image pixels; the real camera's focal ``fx`` sees the same face at
        depth ``tz * fx / (1.5 * side)``, along the ray through the head origin's pixel.
        ``None`` when the translation puts the head behind the camera.
        """
        size = self.manifest.input_size
        tx, ty, tz = pose_ed[3:6]
        if not tz > 1e-6:
            return None
        focal = CROP_FOCAL_FACTOR * size
        crop_pixel = np.array([focal * tx / tz + size / 2.0, focal * ty / tz + size / 2.0])
        image_pixel = apply_affine(crop_pixel, invert_affine(item.affine))
        depth = tz * camera.matrix[0, 0] / (CROP_FOCAL_FACTOR * item.side)
        bearing = camera.bearing(image_pixel)
        return bearing * depth / bearing[2]

    def _smooth(self, face: FaceResult, timestamp_ns: int) -> None:
        """One-euro filter of angles, position and landmarks of this track, in place."""
        parts = [np.array([face.yaw, face.pitch, face.roll]), face.position]
        if face.landmarks is not None:
            parts.append(face.landmarks.ravel())
        vector = np.concatenate(parts)
        filt = self._filters.get(face.track_id)
        if filt is None or filt.angle_mask is None or len(filt.angle_mask) != len(vector):
            mask = np.zeros(len(vector), dtype=bool)
            mask[:_ANGLE_COUNT] = True
            settings = self.config.smoothing
            filt = OneEuroFilter(
                settings.min_cutoff_hz, settings.beta, settings.derivative_cutoff_hz, mask
            )
            self._filters[face.track_id] = filt
        smoothed = filt(timestamp_ns, vector)
        yaw, pitch, roll = smoothed[:_ANGLE_COUNT]
        # Keep rotation consistent with the smoothed angles: R = R_ray(unchanged) @ R(angles).
        ray = (
            face.rotation
            @ orientation_from_network(np.rad2deg([face.yaw, face.pitch, face.roll])).T
        )
        face.yaw, face.pitch, face.roll = float(yaw), float(pitch), float(roll)
        face.rotation = ray @ orientation_from_network(np.rad2deg([yaw, pitch, roll]))
        face.position = smoothed[_ANGLE_COUNT : _ANGLE_COUNT + 3]
        if face.landmarks is not None:
            face.landmarks = smoothed[_ANGLE_COUNT + 3 :].reshape(-1, 2)
