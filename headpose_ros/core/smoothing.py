"""One-euro temporal filter (Casiez et al., CHI 2012) driven by frame timestamps.

The filter's time step comes from the frames' own timestamps, never from the wall clock, so
replaying the same bag, at any speed, gives bit-identical output.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OneEuroFilter"]


def _alpha(cutoff_hz: float, dt_s: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Adaptive low-pass filter for a vector signal: smooth when still, responsive when moving.

    ``angle_mask`` marks components that are angles in radians: their differences are wrapped
    to (-pi, pi] so a yaw crossing +-180 degrees is not smoothed through zero. NaN components
    pass through unfiltered and restart that component's state.
    """

    def __init__(
        self,
        min_cutoff_hz: float = 1.0,
        beta: float = 0.05,
        derivative_cutoff_hz: float = 1.0,
        angle_mask: np.ndarray | None = None,
    ) -> None:
        """Store the parameters; the state starts empty (first sample passes through)."""
        if min_cutoff_hz <= 0 or derivative_cutoff_hz <= 0 or beta < 0:
            raise ValueError("cutoff frequencies must be positive and beta non-negative")
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.derivative_cutoff_hz = derivative_cutoff_hz
        self.angle_mask = None if angle_mask is None else np.asarray(angle_mask, dtype=bool)
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new track, or time jumped backwards)."""
        self._last_ns: int | None = None
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    def __call__(self, timestamp_ns: int, value: np.ndarray) -> np.ndarray:
        """Filter ``value`` observed at ``timestamp_ns``.

        A repeated timestamp returns the current estimate unchanged (no time has passed); an
        earlier one (a bag played again from the start) restarts the filter.
        """
        value = np.asarray(value, dtype=np.float64)
        if self._value is not None and timestamp_ns == self._last_ns:
            return self._value.copy()
        if self._value is None or self._last_ns is None or timestamp_ns < self._last_ns:
            return self._start(timestamp_ns, value)
        dt = (timestamp_ns - self._last_ns) * 1e-9
        delta = value - self._value
        if self.angle_mask is not None:
            delta = np.where(self.angle_mask, (delta + np.pi) % (2.0 * np.pi) - np.pi, delta)
        speed = delta / dt
        a_d = _alpha(self.derivative_cutoff_hz, dt)
        speed_hat = np.where(
            np.isfinite(self._speed), a_d * speed + (1 - a_d) * self._speed, speed
        )
        cutoff = self.min_cutoff_hz + self.beta * np.abs(speed_hat)
        tau = 1.0 / (2.0 * np.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        filtered = self._value + a * delta
        fresh = ~np.isfinite(filtered)
        filtered = np.where(fresh, value, filtered)
        if self.angle_mask is not None:
            filtered = np.where(
                self.angle_mask, (filtered + np.pi) % (2.0 * np.pi) - np.pi, filtered
            )
        self._value = filtered
        self._speed = np.where(fresh, 0.0, speed_hat)
        self._last_ns = timestamp_ns
        return filtered.copy()

    def _start(self, timestamp_ns: int, value: np.ndarray) -> np.ndarray:
        self._last_ns = timestamp_ns
        self._value = value.copy()
        self._speed = np.zeros_like(value)
        return value.copy()
