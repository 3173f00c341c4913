"""The node's ROS-free parts: mailbox, worker, counters, health policy, reason log."""

from __future__ import annotations

import logging
import threading

from headpose_ros.node_config import DiagnosticsConfig
from headpose_ros.node_support import (
    ForwardingLogHandler,
    FrameWorker,
    Level,
    Mailbox,
    NodeStats,
    ReasonLog,
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


def test_reason_log_describes_each_distinct_reason_then_counts() -> None:
    clock, lines = FakeClock(), []
    log = ReasonLog(lines.append, period_s=10.0, max_reasons=3, clock=clock)
    log.report("image", "unsupported encoding 'xyz16'")
    log.report("image", "unsupported encoding 'abc'")  # another reason of the same kind
    for size in range(5):  # the same reason with other numbers: counted, not logged
        log.report("image", f"data holds {size} bytes")
    assert [line.split(" (")[0] for line in lines] == [
        "unsupported encoding 'xyz16'",
        "unsupported encoding 'abc'",
        "data holds 0 bytes",
    ]
    clock.now += 11.0
    log.report("image", "data holds 9 bytes")
    assert lines[-1] == "data holds 9 bytes (again, 5 time(s) in the last 11 s)"
    log.report("image", "a fourth reason")  # beyond max_reasons: one line, then counted
    log.report("image", "a fifth reason")
    assert lines[-1].startswith("image: more than 3 distinct problems") and len(lines) == 5
