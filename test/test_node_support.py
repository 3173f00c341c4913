"""The node's ROS-free parts: mailbox, worker, counters, health policy and frame intake."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image

from headpose_ros.core.config import config_from_flat
from headpose_ros.core.pipeline import HeadPoseEstimator
from headpose_ros.demo import astronaut_frame, demo_camera_info, image_message
from headpose_ros.messages import rclpy_factory
from headpose_ros.node_config import DiagnosticsConfig, InputConfig
from headpose_ros.node_support import (
    ForwardingLogHandler,
    FrameIntake,
    FrameWorker,
    Level,
    Mailbox,
    NodeStats,
    ProcessedFrame,
    health_report,
)

SECOND = 1_000_000_000


class FakeClock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_mailbox_keeps_the_newest_and_counts_the_replaced() -> None:
    mailbox = Mailbox()
    for item in ("a", "b", "c"):
        mailbox.put(item)
    assert mailbox.take() == "c"
    assert mailbox.counts() == (3, 2)
    mailbox.put("d")
    assert mailbox.take() == "d" and mailbox.counts() == (4, 2)
    mailbox.close()
    assert mailbox.take() is None


def test_worker_reports_a_failing_frame_and_goes_on() -> None:
    handled, errors = [], []
    failed, done = threading.Event(), threading.Event()

    def handle(item: int) -> None:
        if item == 1:
            raise ValueError("bad frame")
        handled.append(item)
        done.set()

    def on_error(error: Exception) -> None:
        errors.append(error)
        failed.set()

    worker = FrameWorker(handle, on_error)
    worker.mailbox.put(1)
    assert failed.wait(5.0)
    worker.mailbox.put(2)
    assert done.wait(5.0)
    worker.stop()
    assert handled == [2] and [str(e) for e in errors] == ["bad frame"]
    worker.mailbox.put(3)  # after stop: nobody takes it
    assert handled == [2]


def stats_with(clock: FakeClock, processed_ms: list[float], rejected: int) -> NodeStats:
    stats = NodeStats(clock)
    for latency in processed_ms:
        stats.frame_taken()
        stats.frame_processed(1, latency)
    for _ in range(rejected):
        stats.frame_taken()
        stats.frame_rejected("bad_image")
    return stats


def test_health_levels_follow_the_thresholds() -> None:
    thresholds = DiagnosticsConfig(
        warn_latency_ms=100.0, error_latency_ms=500.0, warn_drop_ratio=0.5, error_no_frames_s=5.0
    )
    clock = FakeClock()
    waiting = health_report(NodeStats(clock).end_period(), 0, 0, thresholds)
    assert (waiting.level, waiting.summary) == (Level.OK, "waiting for images")

    clock.now += 1.0
    fine = stats_with(clock, [10.0, 20.0], rejected=1)
    clock.now += 1.0
    report = health_report(fine.end_period(), 4, 1, thresholds, {"device": "cpu"})
    assert (report.level, report.summary) == (Level.OK, "ok")
    assert report.values["frames received"] == "4" and report.values["frames processed"] == "2"
    assert report.values["frames dropped (newest frame wins)"] == "1"
    assert report.values["rejected: bad_image"] == "1" and report.values["device"] == "cpu"
    assert report.values["latency p50 ms"] == "15.0" and report.values["fps"] == "2.0"

    slow = health_report(stats_with(clock, [200.0], 0).end_period(), 1, 0, thresholds)
    assert (slow.level, slow.summary) == (Level.WARN, "latency p50 200 ms")
    stuck = health_report(stats_with(clock, [900.0], 0).end_period(), 1, 0, thresholds)
    assert stuck.level == Level.ERROR
    rejecting = health_report(stats_with(clock, [10.0], 3).end_period(), 4, 0, thresholds)
    assert (rejecting.level, rejecting.summary) == (Level.WARN, "3/4 frames rejected")

    silent = stats_with(clock, [10.0], 0)
    silent.end_period()
    clock.now += 6.0
    report = health_report(silent.end_period(), 1, 0, thresholds)
    assert (report.level, report.summary) == (Level.ERROR, "no image for 6.0 s")
    # The period's own counters restart; the totals stay.
    assert report.values["frames processed"] == "1" and report.values["fps"] == "0.0"


def test_log_records_reach_the_right_level() -> None:
    class Target:
        def __init__(self) -> None:
            self.lines: list[tuple[str, str]] = []

        def info(self, message: str) -> None:
            self.lines.append(("info", message))

        def warning(self, message: str) -> None:
            self.lines.append(("warning", message))

        def error(self, message: str) -> None:
            self.lines.append(("error", message))

    target = Target()
    logger = logging.getLogger("headpose_ros.test_forwarding")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(ForwardingLogHandler(target))
    logger.debug("hidden")
    logger.info("one")
    logger.warning("two")
    logger.critical("three")
    assert target.lines == [("info", "one"), ("warning", "two"), ("error", "three")]


@pytest.fixture(scope="module")
def estimator(model_dir: Path) -> HeadPoseEstimator:
    config = config_from_flat(
        {
            "inference.model_dir": str(model_dir),
            "inference.threads": 1,
            "tracking.deterministic_ids": True,
        }
    )
    estimator = HeadPoseEstimator(config)
    yield estimator
    estimator.close()


class Intake:
    """A FrameIntake with its published frames and warnings collected."""

    def __init__(self, estimator: HeadPoseEstimator, settings: InputConfig) -> None:
        estimator.reset()
        self.stats = NodeStats()
        self.published: list[ProcessedFrame] = []
        self.warnings: dict[str, str] = {}
        self.intake = FrameIntake(
            estimator, settings, self.stats, self.published.append, self.warnings.setdefault
        )

    def counts(self) -> dict[str, int]:
        snapshot = self.stats.end_period()
        return {**snapshot.totals, **snapshot.rejected, **snapshot.events}


def test_intake_rejects_bad_images_and_publishes_good_ones(estimator: HeadPoseEstimator) -> None:
    intake = Intake(estimator, InputConfig())
    intake.intake.handle(Image(height=4, width=4, encoding="xyz16", step=8, data=bytes(32)))
    assert intake.published == [] and "xyz16" in intake.warnings["bad_image"]
    intake.intake.handle(image_message(astronaut_frame(), 2 * SECOND))
    (processed,) = intake.published
    assert processed.frame.timestamp_ns == 2 * SECOND and len(processed.frame.faces) == 1
    assert processed.camera is None and not processed.frame.faces[0].metric
    assert intake.counts() == {"taken": 2, "processed": 1, "bad_image": 1}


def test_intake_uses_valid_camera_info_and_counts_invalid(estimator: HeadPoseEstimator) -> None:
    intake = Intake(estimator, InputConfig())
    intake.intake.on_camera_info(demo_camera_info(SECOND))
    intake.intake.handle(image_message(astronaut_frame(), SECOND))
    assert intake.published[-1].camera is not None
    assert intake.published[-1].frame.faces[0].metric
    broken = demo_camera_info(2 * SECOND)
    broken.k = np.zeros(9)
    intake.intake.on_camera_info(broken)
    intake.intake.handle(image_message(astronaut_frame(), 2 * SECOND))
    assert intake.published[-1].camera is None
    assert not intake.published[-1].frame.faces[0].metric
    assert intake.counts()["camera_info messages rejected"] == 1
    assert "focal lengths must be positive" in intake.warnings["bad_camera_info"]


def test_intake_matches_upstream_boxes_by_stamp(estimator: HeadPoseEstimator) -> None:
    intake = Intake(estimator, InputConfig(external_boxes=True, external_boxes_max_age_s=0.1))
    box = rclpy_factory(
        "headpose_msgs/msg/BoundingBox2D", center_x=294.0, center_y=165.0, size_x=90.0, size_y=90.0
    )
    boxes = rclpy_factory(
        "headpose_msgs/msg/FaceArray",
        faces=[rclpy_factory("headpose_msgs/msg/Face", box=box, detection_score=0.625)],
    )
    boxes.header.stamp.sec = 3
    intake.intake.on_face_boxes(boxes)
    intake.intake.handle(image_message(astronaut_frame(), 5 * SECOND))  # 2 s away: not used
    assert intake.published[-1].frame.faces == []
    intake.intake.handle(image_message(astronaut_frame(), 3 * SECOND + 50_000_000))
    assert [f.score for f in intake.published[-1].frame.faces] == [0.625]
    assert intake.counts()["frames without external boxes"] == 1
