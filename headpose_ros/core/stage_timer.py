"""Milliseconds per pipeline stage within one frame, for ``FrameResult.timings_ms``."""

from __future__ import annotations

import time

__all__ = ["StageTimer"]


class StageTimer:
    """Accumulates the time since the previous mark into named stages; ``total`` at the end.

    A stage may be lapped several times in a frame (a re-run of the network adds to ``mnn``);
    :meth:`skip` moves the mark without charging any stage, for work no stage owns.
    """

    def __init__(self, stages: tuple[str, ...]) -> None:
        """Start the clock with every stage at zero."""
        self.times = dict.fromkeys(stages, 0.0)
        self._start = time.perf_counter()
        self._mark = self._start

    def lap(self, stage: str) -> None:
        """Charge the time since the last mark to ``stage``."""
        now = time.perf_counter()
        self.times[stage] += (now - self._mark) * 1000.0
        self._mark = now

    def skip(self) -> None:
        """Move the mark without charging a stage."""
        self._mark = time.perf_counter()

    def finish(self) -> dict[str, float]:
        """Set ``total`` (milliseconds since the start) and return every stage's time."""
        self.times["total"] = (time.perf_counter() - self._start) * 1000.0
        return self.times
