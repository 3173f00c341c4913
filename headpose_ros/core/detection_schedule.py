"""When the face detector runs, and on which thread, so that no tracking frame waits for it.

Per frame the estimator tracks every known face through the network (a few milliseconds);
the detector, which finds new faces, costs several times more over its tile pyramid. Run in
the frame that needs it, it sets the frame time's 95th percentile. In asynchronous mode
:class:`DetectionWorker` takes a copy of a frame when a run is due and its thread is idle,
and hands the detections back at the first frame after the run finished; the frame itself
goes on at once. Only a frame with nothing to track waits for the run it needs: there is no
tracking work it could hold up, and a face that appears (or a single image sent once) is then
answered in its own frame. The results depend on how fast the thread ran, so the offline tools
and replays use the synchronous mode (``detector.asynchronous: false``), where a due run
happens inside its frame and a replay gives identical results.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from headpose_ros.core.config import DetectorConfig
from headpose_ros.core.detection import Detection, FaceDetector

__all__ = [
    "BACKGROUND_NICENESS",
    "MAX_TRACKING_WAIT_S",
    "DetectionSchedule",
    "DetectionWorker",
    "FinishedRun",
]

_LOG = logging.getLogger(__name__)

#: Niceness added to the detector's threads in the background (Linux threads have their own).
BACKGROUND_NICENESS = 10
#: Longest a detector step waits for a tracking frame to end: frames sent back to back (no
#: idle time between them) still leave detection this share of time to progress.
MAX_TRACKING_WAIT_S = 0.05


@dataclass(frozen=True)
class FinishedRun:
    """One finished detector run: its detections, the frame size and the stream generation.

    ``generation`` is the value passed to :meth:`DetectionWorker.submit`; the estimator bumps
    its own when the stream restarts, so detections of an old stream are recognised and
    dropped rather than merged into new tracks.
    """

    detections: list[Detection]
    image_size: tuple[int, int]
    generation: int


class _Handover:
    """What the estimator's thread and the detector's thread share, under one lock."""

    def __init__(self, max_tracking_wait_s: float) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.done = threading.Condition(self.lock)
        self.pending: tuple[np.ndarray, int] | None = None
        self.finished: FinishedRun | None = None
        self.busy = False
        self.closed = False
        # Set while no tracking frame is being processed: the detector works only then.
        self.tracking_idle = threading.Event()
        self.tracking_idle.set()
        self.max_tracking_wait_s = max_tracking_wait_s

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.wake.notify()


def _serve(handover: _Handover, detector: FaceDetector) -> None:
    """Run each handed-over frame on the detector thread until the handover closes.

    The detector's threads first lower their CPU priority: on a machine with few cores the
    tracking thread then preempts them, and a detector run no longer slows tracking frames.
    """
    for thread in {threading.get_native_id()} | detector.native_threads():
        try:
            niceness = os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICENESS
            os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
        except (AttributeError, OSError):  # not Linux, or the thread is gone: no harm
            pass
    while True:
        with handover.lock:
            while handover.pending is None and not handover.closed:
                handover.wake.wait()
            if handover.closed:
                return
            (image, generation), handover.pending = handover.pending, None
        try:
            steps = detector.detect_in_steps(image)
            while True:
                # Between its steps the detector waits for the tracking frame in progress,
                # so frames never share the CPU with it for longer than one step.
                handover.tracking_idle.wait(timeout=handover.max_tracking_wait_s)
                try:
                    next(steps)
                except StopIteration as finished:
                    detections = finished.value
                    break
        except Exception:  # noqa: BLE001 - one bad run must not end detection for good
            _LOG.exception("face detector failed on a frame; its faces are not detected")
            detections = []
        with handover.lock:
            size = (image.shape[1], image.shape[0])
            handover.finished = FinishedRun(detections, size, generation)
            handover.busy = False
            handover.done.notify_all()


class DetectionWorker:
    """Runs a :class:`FaceDetector` on a daemon thread, one frame at a time.

    The thread holds no reference to the worker, so a worker that is dropped without
    :meth:`close` is collected and its thread told to stop (as at interpreter exit).
    """

    def __init__(
        self, detector: FaceDetector, max_tracking_wait_s: float = MAX_TRACKING_WAIT_S
    ) -> None:
        """Start the thread; it sleeps until a frame is submitted."""
        self._handover = _Handover(max_tracking_wait_s)
        self._thread = threading.Thread(
            target=_serve, args=(self._handover, detector), name="face_detector", daemon=True
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, self._handover.close)

    def submit(self, image_bgr: np.ndarray, generation: int) -> bool:
        """Hand a copy of the frame to the thread; False (nothing done) when it is busy."""
        handover = self._handover
        with handover.lock:
            if handover.busy or handover.closed:
                return False
            handover.pending, handover.busy = (image_bgr.copy(), generation), True
            handover.wake.notify()
            return True

    def collect(self) -> FinishedRun | None:
        """Take the last finished run, once; ``None`` when none finished since the last call."""
        with self._handover.lock:
            finished, self._handover.finished = self._handover.finished, None
            return finished

    def wait(self) -> FinishedRun | None:
        """Wait for the run in flight (if any) to finish, then :meth:`collect`.

        The detector is told no tracking frame is in progress meanwhile, so it runs at full
        speed for the frame that waits on it.
        """
        handover = self._handover
        was_tracking = not handover.tracking_idle.is_set()
        handover.tracking_idle.set()
        try:
            with handover.lock:
                while handover.busy and not handover.closed:
                    handover.done.wait()
        finally:
            if was_tracking:
                handover.tracking_idle.clear()
        return self.collect()

    def tracking(self, busy: bool) -> None:
        """Say that a tracking frame starts (``True``) or ends: the detector pauses meanwhile."""
        if busy:
            self._handover.tracking_idle.clear()
        else:
            self._handover.tracking_idle.set()

    @property
    def busy(self) -> bool:
        """True from a submitted frame until its run has finished."""
        with self._handover.lock:
            return self._handover.busy

    def close(self) -> None:
        """Stop the thread after its current run (if any); later submits are refused."""
        self._finalizer()
        self._thread.join()


class DetectionSchedule:
    """Decides per frame whether the detector starts, and which finished detections to merge.

    A run is due every ``interval_frames`` frames, or at once when tracking asks (a track
    lacked evidence, or there is none). In asynchronous mode the frames are counted from the end
    of the last run, not its start: a run longer than the interval (the tile pyramid on a small
    CPU) would otherwise be followed by the next at once, and the detector would hold a core
    the whole time. ``counters["detector_runs"]`` counts the runs whose
    detections were merged, ``counters["detector_runs_stale"]`` those dropped because the
    stream restarted (or changed size) while they ran.
    """

    def __init__(
        self, detector: FaceDetector | None, config: DetectorConfig, counters: Counter[str]
    ) -> None:
        """Use ``detector`` in the configured mode (its own thread when asynchronous).

        Without a detector (boxes only come from the caller) nothing ever runs.
        """
        self.detector = detector
        self.interval_frames = config.interval_frames
        self.worker = (
            DetectionWorker(detector) if config.asynchronous and detector is not None else None
        )
        self.counters = counters
        self._frames_since_run = 0
        self._generation = 0

    def detections(
        self, image_bgr: np.ndarray, tracking_asks: bool, nothing_tracked: bool = False
    ) -> list[Detection] | None:
        """Return this frame's detections to merge into tracking, ``None`` when there are none.

        ``nothing_tracked``: the frame has no face to track, so in asynchronous mode it waits
        for its own run (a run of an earlier frame still in flight is merged instead).
        """
        if self.detector is None:
            return None
        due = tracking_asks or self._frames_since_run + 1 >= self.interval_frames
        if self.worker is None:
            self._frames_since_run = 0 if due else self._frames_since_run + 1
            if not due:
                return None
            self.counters["detector_runs"] += 1
            return self.detector.detect(image_bgr)
        finished = self._current(self.worker.collect(), image_bgr)
        idle = not self.worker.busy
        started = due and self.worker.submit(image_bgr, self._generation)
        if started:
            self._frames_since_run = 0
        elif idle:
            self._frames_since_run += 1
        if finished is None and nothing_tracked:
            finished = self._current(self.worker.wait(), image_bgr)
        if finished is None:
            return None
        self.counters["detector_runs"] += 1
        return finished.detections

    def _current(self, finished: FinishedRun | None, image_bgr: np.ndarray) -> FinishedRun | None:
        """``finished`` unless it belongs to an earlier stream or frame size (then counted)."""
        if finished is None:
            return None
        size = (image_bgr.shape[1], image_bgr.shape[0])
        if finished.generation != self._generation or finished.image_size != size:
            self.counters["detector_runs_stale"] += 1
            return None
        return finished

    @contextlib.contextmanager
    def tracking_frame(self) -> Iterator[None]:
        """Mark a tracking frame in progress: the background detector pauses until it ends."""
        if self.worker is not None:
            self.worker.tracking(True)
        try:
            yield
        finally:
            if self.worker is not None:
                self.worker.tracking(False)

    @property
    def pending(self) -> bool:
        """True while an asynchronous run is in flight."""
        return self.worker is not None and self.worker.busy

    def restart(self) -> None:
        """Start a new stream: runs still in flight belong to the old one and are dropped."""
        self._generation += 1
        self._frames_since_run = 0

    def close(self) -> None:
        """Stop the thread (after its current run), then release the detector."""
        if self.worker is not None:
            self.worker.close()
        if self.detector is not None:
            self.detector.close()
