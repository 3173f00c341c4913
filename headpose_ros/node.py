"""The headpose_ros lifecycle node: camera images in, faces with head pose out.

A thin adapter: estimation lives in :mod:`headpose_ros.core`, message conversions in
:mod:`headpose_ros.messages`, what happens to each input message in
:mod:`headpose_ros.frame_intake`, counters and the health policy in
:mod:`headpose_ros.node_support` (all without ROS); this wires them to topics, parameters and
the lifecycle. *configure* validates the parameters, loads the models (failing with a message
naming the bad file) and creates the lifecycle publishers; *activate* enables them and starts
the subscriptions, the worker and the diagnostics timer; *deactivate*, *cleanup* and
*shutdown* undo them. The image callback only drops a message into a one-slot mailbox that a
worker thread empties, so a slow model never builds a backlog (replaced frames are counted).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from headpose_msgs.msg import FaceArray
from headpose_ros.core.config import ConfigError
from headpose_ros.core.manifest import ModelFileError
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.core.visualization import draw_frame
from headpose_ros.dds_profile import use_large_image_profile
from headpose_ros.frame_intake import FrameIntake, ProcessedFrame
from headpose_ros.messages import (
    OUTPUT_TOPICS,
    frame_messages,
    parameter_descriptor,
    rclpy_factory,
    rclpy_image_message,
)
from headpose_ros.node_config import (
    NodeConfig,
    all_settings,
    configs_from_parameters,
    parameter_change_problem,
)
from headpose_ros.node_support import (
    ForwardingLogHandler,
    FrameWorker,
    NodeStats,
    ReasonLog,
    health_report,
)

__all__ = ["HeadPoseNode", "main"]

#: Output topic -> (message type, the output setting that enables it; None = always on).
_OUTPUTS = {
    "faces": (FaceArray, None),
    "pose": (PoseStamped, "pose_stamped"),
    "poses": (PoseArray, "pose_array"),
    "markers": (MarkerArray, "markers"),
    "debug_image": (Image, "debug_image"),
}


#: Longest wait of the main loop for work, so Ctrl-C / SIGTERM are handled within it (seconds).
_SIGNAL_POLL_S = 0.2


class HeadPoseNode(LifecycleNode):
    """Lifecycle node estimating head pose, landmarks, visibility and attention per face."""

    def __init__(self, node_name: str = "headpose", **kwargs: Any) -> None:
        # Undeclared names reach the callback below, which rejects them naming them.
        super().__init__(node_name, allow_undeclared_parameters=True, **kwargs)
        core_logger = logging.getLogger("headpose_ros")
        core_logger.setLevel(logging.INFO)
        core_logger.addHandler(ForwardingLogHandler(self.get_logger()))
        core_logger.propagate = False
        # The frame intake reports the estimator's events (each distinct reason, then counts).
        logging.getLogger("headpose_ros.core.pipeline").setLevel(logging.ERROR)
        self._specs = {spec.name: spec for spec in all_settings()}
        for spec in self._specs.values():
            self.declare_parameter(
                spec.name, spec.default, parameter_descriptor(rclpy_factory, spec)
            )
        configs_from_parameters(self._current_values())  # ConfigError names a bad one
        self.add_on_set_parameters_callback(self._validate_parameter_change)
        self.settings = NodeConfig()
        self.estimator: HeadPoseEstimator | None = None
        self._outputs: dict[str, Any] = {}
        self._tf_broadcaster: Any = None
        self._entities: list[Any] = []
        self._worker: FrameWorker | None = None
        self._stats = NodeStats()
        self._intake: FrameIntake | None = None
        self._shown_ids: set[str] = set()
        self.finalized = False

    # ----------------------------------------------------------------- parameters
    def _current_values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in self._specs}

    def _validate_parameter_change(self, parameters: list[Parameter]) -> SetParametersResult:
        """Reject invalid values naming the parameter; valid ones apply at next configure."""
        changes = {parameter.name: parameter.value for parameter in parameters}
        problem = parameter_change_problem(self._current_values(), changes, self._specs)
        return SetParametersResult(successful=problem is None, reason=problem or "")

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate parameters, load the models, create the (inactive) publishers."""
        try:
            estimator_config, self.settings = configs_from_parameters(self._current_values())
            self.estimator = HeadPoseEstimator(estimator_config)
        except (ConfigError, ModelFileError) as error:
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        except Exception as error:  # noqa: BLE001 - e.g. a detector backend that cannot load
            self.get_logger().error(f"configure failed: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        wanted = vars(self.settings.output)
        for topic, (message_type, setting) in _OUTPUTS.items():
            if setting is None or wanted[setting]:
                self._outputs[topic] = self.create_lifecycle_publisher(message_type, topic, 10)
        self._outputs["diagnostics"] = self.create_lifecycle_publisher(
            DiagnosticArray, "/diagnostics", 10
        )
        self._tf_broadcaster = self._create_tf_broadcaster() if self.settings.output.tf else None
        mode = "encoder only" if estimator_config.inference.encoder_only else "MNN"
        mode += " + OR" if self.estimator.regressor is not None else ""
        name, device = self.estimator.manifest.name, self.estimator.device
        precision = self.estimator.precision
        self.get_logger().info(f"model '{name}' loaded on {device}, {precision} ({mode})")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers; create subscriptions, the worker and the diagnostics timer."""
        settings = self.settings.input
        qos = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=settings.queue_depth,
            reliability=ReliabilityPolicy.RELIABLE
            if settings.reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
        )
        self._stats, self._shown_ids = NodeStats(), set()
        log = ReasonLog(self.get_logger().warning)
        self._intake = FrameIntake(self.estimator, settings, self._stats, self._publish, log)
        self._worker = FrameWorker(self._intake.handle, self._intake.failed)
        image_type, image_topic = (
            (CompressedImage, "image/compressed")
            if settings.transport == "compressed"
            else (Image, "image")
        )
        # CameraInfo first: when it and its image are ready together, the executor takes it
        # in creation order, so the image is estimated with its own intrinsics.
        self._entities = [
            self.create_subscription(CameraInfo, "camera_info", self._intake.on_camera_info, qos),
            self.create_subscription(image_type, image_topic, self._worker.mailbox.put, qos),
            self.create_timer(self.settings.diagnostics.period_s, self._publish_diagnostics),
        ]
        if settings.external_boxes:
            self._entities.append(
                self.create_subscription(FaceArray, "face_boxes", self._intake.on_face_boxes, 10)
            )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames: release subscriptions, timer and worker; disable publishers."""
        self._release_activation()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and unload the models."""
        self._release_configuration()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, whatever state the node was in."""
        self._release_activation()
        self._release_configuration()
        self.finalized = True
        return super().on_shutdown(state)

    def _release_activation(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        for entity in self._entities:
            if hasattr(entity, "cancel"):
                entity.cancel()
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._entities, self._worker = [], None

    def _release_configuration(self) -> None:
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        if self._tf_broadcaster is not None:
            self.destroy_publisher(self._tf_broadcaster.pub_tf)
        self._outputs, self._tf_broadcaster = {}, None
        if self.estimator is not None:
            self.estimator.close()
            self.estimator = None

    def _create_tf_broadcaster(self) -> Any:
        try:
            from tf2_ros import TransformBroadcaster
        except ImportError:
            self.get_logger().info("tf2_ros is not installed here: no face_<id>/gaze_<id> TF")
            return None
        return TransformBroadcaster(self)

    # ----------------------------------------------------------------- outputs
    def _publish(self, processed: ProcessedFrame) -> None:
        header, frame = processed.header, processed.frame
        messages = frame_messages(
            rclpy_factory,
            header,
            frame,
            self.estimator.manifest.landmark_scheme,
            frame.camera,
            self._shown_ids,
            topics=self._outputs.keys() & set(OUTPUT_TOPICS),
            transforms=self._tf_broadcaster is not None,
        )
        self._shown_ids = messages.shown_ids
        for topic, message in messages.topics.items():
            self._outputs[topic].publish(message)
        if messages.transforms:
            self._tf_broadcaster.sendTransform(messages.transforms)
        debug = self._outputs.get("debug_image")
        if debug is not None and debug.get_subscription_count():
            debug.publish(rclpy_image_message(header, draw_frame(processed.image, frame)))

    # ----------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        """Periodic health report; the levels come from the thresholds (node_support)."""
        arrived, dropped = self._worker.mailbox.counts() if self._worker else (0, 0)
        extra = self._intake.describe() if self._intake is not None else {}
        report = health_report(
            self._stats.end_period(), arrived, dropped, self.settings.diagnostics, extra
        )
        status = DiagnosticStatus(
            level=bytes([report.level]),
            name=f"{self.get_name()}: head pose",
            message=report.summary,
            hardware_id="headpose_ros",
            values=[KeyValue(key=k, value=v) for k, v in report.values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._outputs["diagnostics"].publish(array)


def main(args: list[str] | None = None) -> None:
    """Run the node; with ``autostart`` (default) configure and activate it right away.

    rclpy's own signal handlers would shut the context down on Ctrl-C, before the node could
    go through its shutdown transition; here Ctrl-C and SIGTERM interrupt the spin instead, and
    the node leaves through ``trigger_shutdown`` while the context still works. Python runs
    those handlers only between waits, so the spin waits at most :data:`_SIGNAL_POLL_S` at a
    time: an inactive or unconfigured node has no timer to end a wait, and would otherwise
    ignore Ctrl-C until killed.
    """
    dds_profile = use_large_image_profile()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        node = HeadPoseNode()
    except (ParameterException, InvalidParameterValueException, ConfigError) as error:
        # A parameter file or override outside the declared type or range.
        rclpy.logging.get_logger("headpose").fatal(f"invalid parameter: {error}")
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    node.get_logger().info(dds_profile)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    exit_code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                exit_code = 1
            else:
                node.trigger_activate()
        while not exit_code and rclpy.ok():
            executor.spin_once(timeout_sec=_SIGNAL_POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        # Ctrl-C under `ros2 launch` reaches the node twice (from the terminal and from launch):
        # the second must not interrupt releasing the models and turn a clean exit into a crash.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not node.finalized:
            node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    if exit_code:
        raise SystemExit(exit_code)
