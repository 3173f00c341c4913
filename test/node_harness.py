"""Drive the real headpose_node executable over DDS: parameter files, a probe node, test images.

The node runs as a subprocess (as ``ros2 launch`` would start it); the probe is an rclpy node
in the test process that publishes camera topics and records every output topic.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from headpose_msgs.msg import FaceArray
from headpose_ros.demo import astronaut_frame, demo_camera_info, image_message

__all__ = [
    "Probe",
    "astronaut_frame",
    "demo_camera_info",
    "image_message",
    "node_and_probe",
    "start_node",
]

NODE_EXECUTABLE = Path(sys.executable).with_name("headpose_node")
OUTPUTS = {
    "faces": FaceArray,
    "pose": PoseStamped,
    "poses": PoseArray,
    "markers": MarkerArray,
    "debug_image": Image,
}


def write_params(path: Path, model_dir: Path, **overrides: Any) -> Path:
    """A parameter file for the node: test-friendly defaults plus dotted-name overrides."""
    values: dict[str, Any] = {
        "inference.model_dir": str(model_dir),
        "inference.threads": 1,
        "tracking.deterministic_ids": True,
        "detector.asynchronous": False,
        "diagnostics.period_s": 0.5,
        "input.reliability": "reliable",
        **overrides,
    }
    nested: dict[str, Any] = {}
    for name, value in values.items():
        *sections, leaf = name.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[leaf] = value
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested}}))
    return path


def start_node(params: Path, namespace: str = "/test", *ros_args: str) -> subprocess.Popen[str]:
    """Start the node executable (it inherits the test's DDS settings).

    Its output goes to a file, not a pipe: a pipe nobody reads until the end fills up and
    blocks the node in the middle of a test.
    """
    log = tempfile.NamedTemporaryFile("w+", prefix="headpose_node_", suffix=".log", delete=False)
    command = [str(NODE_EXECUTABLE), "--ros-args", "-r", f"__ns:={namespace}"]
    process = subprocess.Popen(
        [*command, "--params-file", str(params), *ros_args],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.log_path = Path(log.name)  # type: ignore[attr-defined]
    log.close()
    return process


def node_output(process: subprocess.Popen[str]) -> str:
    """Everything the node printed so far."""
    return process.log_path.read_text(errors="replace")  # type: ignore[attr-defined]


def stop_node(process: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """Stop the node with SIGINT (as Ctrl-C / launch would) and return its output."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return node_output(process)


class Probe:
    """Test-side node: publishes camera topics to the node and records all its outputs."""

    def __init__(
        self,
        context: Any,
        namespace: str = "/test",
        reliable: bool = True,
        image_topic: str | None = None,
    ) -> None:
        self.node = Node("headpose_probe", context=context)
        self.namespace = namespace
        self.received: dict[str, list[Any]] = defaultdict(list)
        image_qos = 10 if reliable else qos_profile_sensor_data
        self.image = self.node.create_publisher(
            Image, image_topic or f"{namespace}/image", image_qos
        )
        self.compressed = self.node.create_publisher(
            CompressedImage, f"{namespace}/image/compressed", image_qos
        )
        self.camera_info = self.node.create_publisher(
            CameraInfo, f"{namespace}/camera_info", image_qos
        )
        for topic, message_type in OUTPUTS.items():
            self.subscribe(topic, message_type)
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self.received["diagnostics"].append, 10
        )
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)

    def subscribe(self, topic: str, message_type: type) -> Any:
        return self.node.create_subscription(
            message_type, f"{self.namespace}/{topic}", self.received[topic].append, 10
        )

    def spin_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def wait_for_node(self, timeout: float = 60.0) -> bool:
        """True once the node's subscription to our image topic exists (it is active)."""
        return self.spin_until(lambda: self.image.get_subscription_count() > 0, timeout)

    def send_and_wait(
        self, message: Any, topic: str = "faces", timeout: float = 20.0, publisher: Any = None
    ) -> Any:
        """Publish an image and return the first new output on ``topic`` stamped like it.

        ``publisher``: another publisher of the image topic, e.g. the one that sent earlier
        messages, which DDS then delivers before this one.
        """
        before = len(self.received[topic])
        if publisher is None:
            publisher = self.compressed if isinstance(message, CompressedImage) else self.image
        publisher.publish(message)
        stamp = (message.header.stamp.sec, message.header.stamp.nanosec)

        def arrived() -> bool:
            return any(
                (m.header.stamp.sec, m.header.stamp.nanosec) == stamp
                for m in self.received[topic][before:]
            )

        assert self.spin_until(arrived, timeout), f"no {topic} output for stamp {stamp}"
        return next(
            m
            for m in self.received[topic][before:]
            if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp
        )

    def send_camera_info(self, message: Any, timeout: float = 10.0) -> dict[str, str]:
        """Publish a CameraInfo and wait until the node has counted it: it is then in use.

        A CameraInfo published once and assumed to have arrived makes a test flaky; this
        waits for the node's own word (its diagnostics) and returns them.
        """

        def infos() -> int:
            return int(self.latest_diagnostics().get("camera_info received", 0))

        before = infos()
        self.camera_info.publish(message)
        assert self.spin_until(lambda: infos() > before, timeout), "camera_info not counted"
        return self.latest_diagnostics()

    def latest_diagnostics(self) -> dict[str, str]:
        """The node's newest diagnostics values ({} before the first one)."""
        if not self.received["diagnostics"]:
            return {}
        status = self.received["diagnostics"][-1].status[0]
        return {kv.key: kv.value for kv in status.values} | {
            "_level": str(
                int.from_bytes(status.level, "little")
                if isinstance(status.level, bytes)
                else status.level
            ),
            "_message": status.message,
        }

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.executor.shutdown()
        self.node.destroy_node()


@contextlib.contextmanager
def node_and_probe(
    params: Path, context: Any, wait_active: bool = True, *ros_args: str
) -> Iterator[tuple[Probe, subprocess.Popen[str]]]:
    """A node process on /test and a probe talking to it; both stopped afterwards.

    With ``wait_active`` the node must come up and subscribe to the image topic (autostart),
    and must exit cleanly at the end.
    """
    process = start_node(params, "/test", *ros_args)
    probe = Probe(context)
    try:
        if wait_active:
            assert probe.wait_for_node(), node_output(process)
        yield probe, process
    finally:
        probe.close()
        output = stop_node(process)
    if wait_active:
        assert process.returncode == 0, output
