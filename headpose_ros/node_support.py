"""What the ROS node does that needs no ROS: frame hand-over, counters and health policy.

The node (:mod:`headpose_ros.node`) only wires these to topics, timers and the lifecycle, so
they are tested as plain Python (``test/test_node_support.py``): the one-slot
:class:`Mailbox` and the :class:`FrameWorker` thread that empties it, the :class:`NodeStats`
behind ``/diagnostics`` and the policy that turns them into a level and a summary
(:func:`health_report`), the :class:`ReasonLog` that describes each distinct problem once and
then counts it, and the bridge from the core's Python logging to the node's logger
(:class:`ForwardingLogHandler`). What happens to one input message is
:mod:`headpose_ros.frame_intake`. Neither imports rclpy or a message package
(``test/test_core_has_no_ros.py`` checks it).
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from headpose_ros.node_config import DiagnosticsConfig

__all__ = [
    "ForwardingLogHandler",
    "FrameWorker",
    "HealthReport",
    "Level",
    "Mailbox",
    "NodeStats",
    "PeriodSnapshot",
    "ReasonLog",
    "health_report",
]

#: Latencies kept for the percentiles of one report (the newest ones).
_LATENCY_WINDOW = 1000


class Mailbox:
    """One-slot hand-over from the subscription callbacks to a worker (newest frame wins).

    A slow model therefore never builds a backlog; every frame replaced before the worker took
    it is counted in :attr:`dropped`.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: Any = None
        self._closed = False
        self.arrived = 0
        self.dropped = 0

    def put(self, item: Any) -> None:
        """Leave ``item`` for the worker, replacing (and counting) one it has not taken yet."""
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
        """Wake the worker for good: every later :meth:`take` returns ``None``."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def counts(self) -> tuple[int, int]:
        """``(arrived, dropped)``, read together."""
        with self._condition:
            return self.arrived, self.dropped


class FrameWorker:
    """A thread that hands each newest frame of a :class:`Mailbox` to ``handle``.

    An exception from ``handle`` goes to ``on_error`` and the worker carries on: the node
    must outlive any one bad frame.
    """

    def __init__(
        self, handle: Callable[[Any], None], on_error: Callable[[Exception], None]
    ) -> None:
        self.mailbox = Mailbox()
        self._handle, self._on_error = handle, on_error
        self._thread = threading.Thread(target=self._run, name="headpose_worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self.mailbox.take()) is not None:
            try:
                self._handle(item)
            except Exception as error:  # noqa: BLE001 - reported, and the next frame comes
                self._on_error(error)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the mailbox and wait for the frame in progress to finish."""
        self.mailbox.close()
        self._thread.join(timeout=timeout_s)


@dataclass(frozen=True)
class PeriodSnapshot:
    """The counters at the end of one diagnostics period (totals and the period's own)."""

    totals: dict[str, int]
    rejected: dict[str, int]
    events: dict[str, int]
    latencies_ms: np.ndarray
    faces_last_frame: int
    seconds_since_image: float | None
    period_s: float
    period_received: int
    period_processed: int
    period_problems: int


class NodeStats:
    """Counters for diagnostics, safe to update from the worker, callbacks and the timer.

    Every frame the worker takes ends either processed or rejected (with a reason), so with the
    mailbox's counts: received = processed + sum(rejected) + dropped (+ one still pending).
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._taken = 0
        self._processed = 0
        self._rejected: collections.Counter[str] = collections.Counter()
        self._events: collections.Counter[str] = collections.Counter()
        self._latencies_ms: list[float] = []
        self._faces_last_frame = 0
        self._last_image: float | None = None
        self._period_start = clock()
        self._period = {"received": 0, "processed": 0, "problems": 0}

    def frame_taken(self) -> None:
        """Count a frame the worker took from the mailbox."""
        with self._lock:
            self._taken += 1
            self._period["received"] += 1
            self._last_image = self._clock()

    def frame_rejected(self, reason: str) -> None:
        """Count a taken frame that could not be used, for ``reason``."""
        with self._lock:
            self._rejected[reason] += 1
            self._period["problems"] += 1

    def frame_processed(self, faces: int, latency_ms: float) -> None:
        """Count a taken frame that was estimated and whose results were published."""
        with self._lock:
            self._processed += 1
            self._period["processed"] += 1
            self._faces_last_frame = faces
            self._latencies_ms.append(latency_ms)

    def count(self, event: str, amount: int = 1) -> None:
        """Count something worth seeing in diagnostics that is not a rejected frame."""
        with self._lock:
            self._events[event] += amount

    def end_period(self) -> PeriodSnapshot:
        """Everything a report needs; the period's own counters start again from zero."""
        now = self._clock()
        with self._lock:
            self._latencies_ms = self._latencies_ms[-_LATENCY_WINDOW:]
            snapshot = PeriodSnapshot(
                totals={"taken": self._taken, "processed": self._processed},
                rejected=dict(self._rejected),
                events=dict(self._events),
                latencies_ms=np.asarray(self._latencies_ms),
                faces_last_frame=self._faces_last_frame,
                seconds_since_image=None if self._last_image is None else now - self._last_image,
                period_s=max(now - self._period_start, 1e-6),
                period_received=self._period["received"],
                period_processed=self._period["processed"],
                period_problems=self._period["problems"],
            )
            self._period_start = now
            self._period = dict.fromkeys(self._period, 0)
        return snapshot


class Level(IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels (the message stores them as one byte)."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class HealthReport:
    """One diagnostics status: its level, a one-line summary and the key/value pairs."""

    level: Level
    summary: str
    values: dict[str, str]


def health_report(
    snapshot: PeriodSnapshot,
    arrived: int,
    dropped: int,
    thresholds: DiagnosticsConfig,
    extra: dict[str, str] | None = None,
) -> HealthReport:
    """Level and summary from the thresholds, the worst problem first.

    ERROR when no image came for ``error_no_frames_s`` or the median latency passes
    ``error_latency_ms``; WARN for ``warn_latency_ms`` or when more than ``warn_drop_ratio`` of
    the period's frames were rejected. ``arrived``/``dropped`` are the mailbox's counts.
    """
    latencies = snapshot.latencies_ms
    p50 = float(np.percentile(latencies, 50)) if latencies.size else float("nan")
    p95 = float(np.percentile(latencies, 95)) if latencies.size else float("nan")
    values = {
        "frames received": arrived,
        "frames taken by the worker": snapshot.totals["taken"],
        "frames processed": snapshot.totals["processed"],
        "frames dropped (newest frame wins)": dropped,
        "faces in last frame": snapshot.faces_last_frame,
        "fps": f"{snapshot.period_processed / snapshot.period_s:.1f}",
        **{f"rejected: {k}": v for k, v in sorted(snapshot.rejected.items())},
        **dict(sorted(snapshot.events.items())),
        "latency p50 ms": f"{p50:.1f}",
        "latency p95 ms": f"{p95:.1f}",
        **(extra or {}),
    }
    silent_for = snapshot.seconds_since_image
    received, problems = snapshot.period_received, snapshot.period_problems
    level, summary = Level.OK, "ok"
    if silent_for is not None and silent_for > thresholds.error_no_frames_s:
        level, summary = Level.ERROR, f"no image for {silent_for:.1f} s"
    elif latencies.size and p50 > thresholds.error_latency_ms:
        level, summary = Level.ERROR, f"latency p50 {p50:.0f} ms"
    elif latencies.size and p50 > thresholds.warn_latency_ms:
        level, summary = Level.WARN, f"latency p50 {p50:.0f} ms"
    elif received and problems / received > thresholds.warn_drop_ratio:
        level, summary = Level.WARN, f"{problems}/{received} frames rejected"
    elif silent_for is None:
        summary = "waiting for images"
    return HealthReport(level, summary, {k: str(v) for k, v in values.items()})


class ReasonLog:
    """Log each distinct problem once, then how often it recurred, at most every ``period_s``.

    "Distinct" is the message with its numbers blanked out, within a ``kind`` (image,
    camera_info, event...): a second unsupported encoding, or another reason to refuse a
    CameraInfo, is described when it first happens, however many problems of its kind came
    before. Beyond ``max_reasons`` distinct ones (a stream of random garbage) new reasons
    are only counted, so the log cannot be flooded.
    """

    def __init__(
        self,
        sink: Callable[[str], Any],
        period_s: float = 10.0,
        max_reasons: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink, self._period_s, self._max = sink, period_s, max_reasons
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], list[float | int]] = {}  # key -> [last logged, count]

    def report(self, kind: str, message: str) -> None:
        """One occurrence of a problem: logged now if new or due, otherwise counted."""
        now = self._clock()
        key = (kind, re.sub(r"\d+(\.\d+)?", "#", message))
        with self._lock:
            if key not in self._seen and len(self._seen) >= self._max:
                key = (kind, "")
                message = f"{kind}: more than {self._max} distinct problems; new ones are counted"
            entry = self._seen.get(key)
            if entry is None:
                self._seen[key] = [now, 0]
                line = f"{message} (first time; repeats are counted in /diagnostics)"
            else:
                entry[1] += 1
                if now - entry[0] < self._period_s:
                    return
                line = f"{message} (again, {entry[1]} time(s) in the last {now - entry[0]:.0f} s)"
                entry[:] = [now, 0]
        self._sink(line)


class _Logger(Protocol):
    def info(self, message: str) -> Any: ...
    def warning(self, message: str) -> Any: ...
    def error(self, message: str) -> Any: ...


class ForwardingLogHandler(logging.Handler):
    """Forward the core's Python logging to another logger (the node's: rosout, console)."""

    def __init__(self, target: _Logger) -> None:
        super().__init__(level=logging.INFO)
        self._target = target

    def emit(self, record: logging.LogRecord) -> None:
        """Pass one record on at the nearest of the target's three levels."""
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._target.error(text)
        elif record.levelno >= logging.WARNING:
            self._target.warning(text)
        else:
            self._target.info(text)
