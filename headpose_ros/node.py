"""The headpose_ros lifecycle node: camera images in, faces with head pose out.

A thin adapter. Everything that estimates lives in :mod:`headpose_ros.core` (no ROS), image
decoding in :mod:`headpose_ros.core.image_codec`, message construction in
:mod:`headpose_ros.messages`; this module wires them to topics, parameters and the lifecycle.

Lifecycle: *configure* reads and validates the parameters and loads the models (failing with
a message naming the missing or bad file); *activate* creates publishers, subscriptions and the
worker; *deactivate* and *cleanup* release them. The executable ``headpose_node`` configures
and activates itself unless ``autostart`` is false.

Frames: the image callback only drops the message into a one-slot mailbox; a worker thread
takes the newest frame and processes it. A slow model therefore never builds a backlog, and
every frame replaced in the mailbox before processing is counted as dropped.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, PoseStamped
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from headpose_msgs.msg import FaceArray
from headpose_ros.core.config import (
    ConfigError,
    EstimatorConfig,
    SettingSpec,
    config_from_flat,
    iter_settings,
)
from headpose_ros.core.image_codec import (
    ImageDecodeError,
    decode_compressed_image,
    decode_raw_image,
)
from headpose_ros.core.manifest import ModelFileError
from headpose_ros.core.metric_pose import CameraModel, IntrinsicsError, camera_from_intrinsics
from headpose_ros.core.pipeline import FrameResult, HeadPoseEstimator
from headpose_ros.core.visualization import draw_frame
from headpose_ros.dds_profile import use_large_image_profile
from headpose_ros.messages import (
    face_array_message,
    face_transforms,
    main_face,
    marker_array_message,
    pose_array_message,
    pose_stamped_message,
    rclpy_factory,
    rclpy_image_message,
)
from headpose_ros.node_config import NodeConfig, all_settings

__all__ = ["HeadPoseNode", "main"]

_PARAMETER_TYPES = {
    bool: Parameter.Type.BOOL,
    int: Parameter.Type.INTEGER,
    float: Parameter.Type.DOUBLE,
    str: Parameter.Type.STRING,
}


def _descriptor(spec: SettingSpec) -> ParameterDescriptor:
    """ROS parameter descriptor carrying the schema's description and allowed values."""
    descriptor = ParameterDescriptor(
        name=spec.name, type=_PARAMETER_TYPES[spec.type].value, description=spec.description
    )
    if spec.type is int and spec.low is not None and spec.high is not None:
        descriptor.integer_range = [
            IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)
        ]
    if spec.type is float and spec.low is not None and spec.high is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
        ]
    if spec.choices:
        descriptor.additional_constraints = f"one of: {', '.join(spec.choices)}"
    return descriptor


class _RosLogHandler(logging.Handler):
    """Forward the core's Python logging to the node's ROS logger (rosout, console, files)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(level=logging.INFO)
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._ros_logger.warning(text)
        else:
            self._ros_logger.info(text)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class _Mailbox:
    """One-slot hand-over from the subscription callbacks to the worker (newest frame wins)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.arrived = 0
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._condition:
            self.arrived += 1
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._condition.notify()

    def take(self) -> Any:
        """Block until an item arrives (returned) or the mailbox is closed (``None``)."""
        with self._condition:
            while self._item is None and not self._closed:
                self._condition.wait()
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


@dataclass
class _Stats:
    """Counters for diagnostics: totals since activation plus the current period's samples.

    Every frame the worker takes ends either processed or rejected (with a reason), so with the
    mailbox's counts: received = processed + sum(rejected) + dropped (+ one still pending).
    """

    received: int = 0
    processed: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)
    faces_last_frame: int = 0
    last_image_time: float | None = None
    period_start: float = field(default_factory=time.monotonic)
    period_received: int = 0
    period_processed: int = 0
    period_problems: int = 0


class HeadPoseNode(LifecycleNode):
    """Lifecycle node estimating head pose, landmarks, visibility and attention per face."""

    def __init__(self, node_name: str = "headpose", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        core_logger = logging.getLogger("headpose_ros")
        core_logger.setLevel(logging.INFO)
        core_logger.addHandler(_RosLogHandler(self.get_logger()))
        core_logger.propagate = False
        self._specs = {spec.name: spec for spec in all_settings()}
        for spec in self._specs.values():
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.settings = NodeConfig()
        self.estimator: HeadPoseEstimator | None = None
        self._entities: list[Any] = []
        self._outputs: dict[str, Any] = {}
        self._mailbox: _Mailbox | None = None
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stats = _Stats()
        self._camera: CameraModel | None = None
        self._camera_frame = ""
        self._warned: set[str] = set()
        self._external_boxes: collections.deque[tuple[int, np.ndarray, np.ndarray]] = (
            collections.deque(maxlen=30)
        )
        self._shown_ids: set[str] = set()
        self._tf_broadcaster: Any = None

    # ----------------------------------------------------------------- parameters
    def _configs_from(self, values: dict[str, Any]) -> tuple[EstimatorConfig, NodeConfig]:
        """Both typed configs from flat parameter values; ConfigError names a bad one."""
        estimator_names = {spec.name for spec in iter_settings(EstimatorConfig())}
        estimator = config_from_flat({k: v for k, v in values.items() if k in estimator_names})
        node = config_from_flat(
            {k: v for k, v in values.items() if k not in estimator_names}, NodeConfig()
        )
        if node.input.external_boxes and estimator.detector.backend != "external":
            estimator.detector.backend = "external"
        return estimator, node

    def _current_values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in self._specs}

    def _validate_parameter_change(self, parameters: list[Parameter]) -> SetParametersResult:
        """Reject invalid values with the schema's reason; valid ones apply at next configure."""
        values = self._current_values()
        values.update({p.name: p.value for p in parameters if p.name in self._specs})
        try:
            self._configs_from(values)
        except ConfigError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters and load the models; fail naming the bad setting or file."""
        try:
            estimator_config, self.settings = self._configs_from(self._current_values())
            self.estimator = HeadPoseEstimator(estimator_config)
        except (ConfigError, ModelFileError) as error:
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except Exception as error:  # noqa: BLE001 - e.g. a detector backend that cannot load
            self.get_logger().error(f"configure failed: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        manifest = self.estimator.manifest
        self.get_logger().info(
            f"model '{manifest.name}' loaded on {self.estimator.device} "
            f"({'encoder only' if estimator_config.inference.encoder_only else 'MNN'}"
            f"{' + OR' if self.estimator.regressor is not None else ''})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Create publishers, subscriptions, the worker thread and the diagnostics timer."""
        settings = self.settings
        self._outputs = {"faces": self.create_publisher(FaceArray, "faces", 10)}
        optional = {
            "pose": (settings.output.pose_stamped, PoseStamped),
            "poses": (settings.output.pose_array, PoseArray),
            "markers": (settings.output.markers, MarkerArray),
            "debug_image": (settings.output.debug_image, Image),
        }
        for topic, (enabled, message_type) in optional.items():
            if enabled:
                self._outputs[topic] = self.create_publisher(message_type, topic, 10)
        self._outputs["diagnostics"] = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._tf_broadcaster = self._create_tf_broadcaster() if settings.output.tf else None

        qos = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=settings.input.queue_depth,
            reliability=ReliabilityPolicy.RELIABLE
            if settings.input.reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self._mailbox = _Mailbox()
        self._stats = _Stats()
        self._shown_ids = set()
        if settings.input.transport == "compressed":
            image_sub = self.create_subscription(
                CompressedImage, "image/compressed", self._mailbox.put, qos
            )
        else:
            image_sub = self.create_subscription(Image, "image", self._mailbox.put, qos)
        self._entities = [
            image_sub,
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos),
            self.create_timer(settings.diagnostics.period_s, self._publish_diagnostics),
        ]
        if settings.input.external_boxes:
            self._entities.append(
                self.create_subscription(FaceArray, "face_boxes", self._on_external_boxes, 10)
            )
        self._worker = threading.Thread(target=self._work, name="headpose_worker", daemon=True)
        self._worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames and release subscriptions, publishers and the worker."""
        self._release_activation()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload the models."""
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, whatever state the node was in."""
        self._release_activation()
        self._release_model()
        return TransitionCallbackReturn.SUCCESS

    def _release_activation(self) -> None:
        if self._mailbox is not None:
            self._mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        for entity in self._entities:
            if hasattr(entity, "cancel"):
                entity.cancel()
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._entities, self._outputs = [], {}
        self._mailbox, self._worker = None, None

    def _release_model(self) -> None:
        if self.estimator is not None:
            self.estimator.close()
            self.estimator = None

    def _create_tf_broadcaster(self) -> Any:
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            self.get_logger().info(
                "tf2_ros is not available in this environment: face_<id>/gaze_<id> TF frames "
                "are not broadcast (poses are still published on 'faces', 'pose', 'poses')"
            )
            return None
        return TransformBroadcaster(self)

    # ----------------------------------------------------------------- inputs
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(f"{message} (logged once; further cases are counted)")

    def _on_camera_info(self, message: CameraInfo) -> None:
        """Keep the latest valid intrinsics; invalid ones disable metric pose until fixed."""
        try:
            camera = camera_from_intrinsics(np.asarray(message.k), np.asarray(message.d))
        except IntrinsicsError as error:
            self._warn_once("bad_camera_info", f"camera_info ignored: {error}")
            camera = None
        with self._lock:
            self._camera, self._camera_frame = camera, message.header.frame_id
            if camera is None:
                self._stats.events["camera_info messages rejected"] += 1

    def _on_external_boxes(self, message: FaceArray) -> None:
        boxes = np.array(
            [
                [
                    f.box.center_x - f.box.size_x / 2,
                    f.box.center_y - f.box.size_y / 2,
                    f.box.center_x + f.box.size_x / 2,
                    f.box.center_y + f.box.size_y / 2,
                ]
                for f in message.faces
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        scores = np.array([f.detection_score for f in message.faces], dtype=np.float64)
        with self._lock:
            self._external_boxes.append((_stamp_ns(message.header), boxes, scores))

    def _boxes_for(self, stamp_ns: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not self.settings.input.external_boxes:
            return None, None
        max_age_ns = self.settings.input.external_boxes_max_age_s * 1e9
        with self._lock:
            candidates = [
                entry for entry in self._external_boxes if abs(entry[0] - stamp_ns) <= max_age_ns
            ]
        if not candidates:
            with self._lock:
                self._stats.events["frames without external boxes"] += 1
            return np.zeros((0, 4)), np.zeros(0)
        _, boxes, scores = min(candidates, key=lambda entry: abs(entry[0] - stamp_ns))
        return boxes, scores

    # ----------------------------------------------------------------- processing
    def _decode(self, message: Image | CompressedImage) -> np.ndarray:
        if isinstance(message, CompressedImage):
            return decode_compressed_image(message.format, message.data)
        return decode_raw_image(
            message.encoding,
            message.height,
            message.width,
            message.step,
            bool(message.is_bigendian),
            message.data,
        )

    def _work(self) -> None:
        """Worker loop: process the newest frame until the mailbox closes."""
        mailbox = self._mailbox
        while mailbox is not None and (message := mailbox.take()) is not None:
            if not self.context.ok():  # shutting down: the publishers are gone
                return
            try:
                self._process(message)
            except Exception as error:  # noqa: BLE001 - the node must outlive any one frame
                with self._lock:
                    self._stats.rejected["processing_error"] += 1
                self._warn_once(
                    f"error:{type(error).__name__}",
                    f"frame failed: {type(error).__name__}: {error}",
                )

    def _process(self, message: Image | CompressedImage) -> None:
        started = time.perf_counter()
        with self._lock:
            self._stats.received += 1
            self._stats.period_received += 1
            self._stats.last_image_time = time.monotonic()
            camera, camera_frame = self._camera, self._camera_frame
        try:
            image = self._decode(message)
        except ImageDecodeError as error:
            with self._lock:
                self._stats.rejected["bad_image"] += 1
                self._stats.period_problems += 1
            self._warn_once("bad_image", f"image rejected: {error}")
            return
        header = message.header
        if camera is not None and camera_frame and camera_frame != header.frame_id:
            self._warn_once(
                "frame_mismatch",
                f"camera_info frame '{camera_frame}' differs from image frame '{header.frame_id}'",
            )
        stamp_ns = _stamp_ns(header)
        boxes, scores = self._boxes_for(stamp_ns)
        frame = self.estimator.estimate(
            image, stamp_ns, camera=camera, boxes=boxes, box_scores=scores
        )
        if frame.skip_reason is not None:
            with self._lock:
                self._stats.rejected[frame.skip_reason] += 1
                self._stats.period_problems += 1
            return
        self._publish(header, frame, camera, image)
        with self._lock:
            self._stats.processed += 1
            self._stats.period_processed += 1
            self._stats.faces_last_frame = len(frame.faces)
            self._stats.latencies_ms.append((time.perf_counter() - started) * 1e3)

    def _publish(
        self, header: Any, frame: FrameResult, camera: CameraModel | None, image: np.ndarray
    ) -> None:
        make = rclpy_factory
        publishers = self._outputs
        scheme = self.estimator.manifest.landmark_scheme
        publishers["faces"].publish(face_array_message(make, header, frame, scheme))
        if "pose" in publishers and (face := main_face(frame)) is not None:
            publishers["pose"].publish(pose_stamped_message(make, header, face))
        if "poses" in publishers:
            publishers["poses"].publish(pose_array_message(make, header, frame))
        if "markers" in publishers:
            markers, self._shown_ids = marker_array_message(
                make, header, frame, camera, self._shown_ids
            )
            publishers["markers"].publish(markers)
        if "debug_image" in publishers and publishers["debug_image"].get_subscription_count():
            annotated = draw_frame(image, frame)
            publishers["debug_image"].publish(rclpy_image_message(header, annotated))
        if self._tf_broadcaster is not None:
            self._tf_broadcaster.sendTransform(face_transforms(make, header, frame))

    # ----------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        """1 Hz (configurable) health report with WARN/ERROR levels from the thresholds."""
        thresholds = self.settings.diagnostics
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            arrived = self._mailbox.arrived if self._mailbox is not None else 0
            dropped = self._mailbox.dropped if self._mailbox is not None else 0
            elapsed = max(now - stats.period_start, 1e-6)
            latencies = np.asarray(stats.latencies_ms[-1000:])
            fps = stats.period_processed / elapsed
            problems = stats.period_problems
            period_received = stats.period_received
            stats.period_start, stats.period_received = now, 0
            stats.period_processed, stats.period_problems = 0, 0
            stats.latencies_ms = stats.latencies_ms[-1000:]
            values = {
                "frames received": arrived,
                "frames taken by the worker": stats.received,
                "frames processed": stats.processed,
                "frames dropped (newest frame wins)": dropped,
                "faces in last frame": stats.faces_last_frame,
                "fps": f"{fps:.1f}",
                **{f"rejected: {k}": v for k, v in sorted(stats.rejected.items())},
                **dict(sorted(stats.events.items())),
            }
            last_image = stats.last_image_time
        p50 = float(np.percentile(latencies, 50)) if latencies.size else float("nan")
        p95 = float(np.percentile(latencies, 95)) if latencies.size else float("nan")
        values.update({"latency p50 ms": f"{p50:.1f}", "latency p95 ms": f"{p95:.1f}"})
        if self.estimator is not None:
            values["device"] = self.estimator.device
            values["model"] = self.estimator.manifest.name
        level, summary = DiagnosticStatus.OK, "ok"
        silent_for = now - last_image if last_image is not None else None
        if silent_for is not None and silent_for > thresholds.error_no_frames_s:
            level, summary = DiagnosticStatus.ERROR, f"no image for {silent_for:.1f} s"
        elif latencies.size and p50 > thresholds.error_latency_ms:
            level, summary = DiagnosticStatus.ERROR, f"latency p50 {p50:.0f} ms"
        elif latencies.size and p50 > thresholds.warn_latency_ms:
            level, summary = DiagnosticStatus.WARN, f"latency p50 {p50:.0f} ms"
        elif period_received and problems / period_received > thresholds.warn_drop_ratio:
            level, summary = DiagnosticStatus.WARN, f"{problems}/{period_received} frames rejected"
        elif last_image is None:
            summary = "waiting for images"
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: head pose",
            message=summary,
            hardware_id="headpose_ros",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._outputs["diagnostics"].publish(array)


def main(args: list[str] | None = None) -> None:
    """Run the node; with ``autostart`` (default) configure and activate it right away."""
    dds_profile = use_large_image_profile()
    rclpy.init(args=args)
    try:
        node = HeadPoseNode()
        node.get_logger().info(dds_profile)
    except (ParameterException, InvalidParameterValueException) as error:
        # A parameter file or override outside the declared type or range.
        rclpy.logging.get_logger("headpose").fatal(f"invalid parameter: {error}")
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    exit_code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit(1)
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SystemExit as stop:
        exit_code = int(stop.code or 0)
    finally:
        # Ctrl-C under `ros2 launch` reaches the node twice (from the terminal and from launch):
        # the second must not interrupt releasing the models and turn a clean exit into a crash.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.on_shutdown(None)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    if exit_code:
        raise SystemExit(exit_code)
