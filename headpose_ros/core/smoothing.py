"""One-euro temporal filters (Casiez et al., CHI 2012) driven by frame timestamps.

The filters' time step comes from the frames' own timestamps, never from the wall clock, so
replaying the same bag, at any speed, gives bit-identical output.

Orientation is filtered on the rotation group itself (:class:`RotationOneEuroFilter`): the
step towards a new sample is a fraction of the rotation between the estimate and the sample.
Euler angles are not filtered: near gimbal lock, or across +-180 degrees, equal-looking angle
steps are very unequal rotations, and each back-and-forth conversion costs precision.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from headpose_ros.core.config import SmoothingConfig

__all__ = ["OneEuroFilter", "PoseSmoother", "RotationOneEuroFilter"]


def _alpha(cutoff_hz: float | np.ndarray, dt_s: float) -> float | np.ndarray:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Adaptive low-pass filter for a vector signal: smooth when still, responsive when moving.

    NaN components pass through unfiltered and restart that component's state. Subclasses
    filter other spaces by redefining the difference between the estimate and a sample, the
    speed's magnitude and the step along that difference.
    """

    def __init__(
        self,
        min_cutoff_hz: float = 1.0,
        beta: float = 0.05,
        derivative_cutoff_hz: float = 1.0,
    ) -> None:
        """Store the parameters; the state starts empty (first sample passes through)."""
        if min_cutoff_hz <= 0 or derivative_cutoff_hz <= 0 or beta < 0:
            raise ValueError("cutoff frequencies must be positive and beta non-negative")
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.derivative_cutoff_hz = derivative_cutoff_hz
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new track, or time jumped backwards)."""
        self._last_ns: int | None = None
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    def __call__(self, timestamp_ns: int, value: np.ndarray) -> np.ndarray:
        """Filter ``value`` observed at ``timestamp_ns``.

        A repeated timestamp returns the current estimate unchanged (no time has passed); an
        earlier one (a bag played again from the start) or a sample of another shape
        restarts the filter.
        """
        value = np.asarray(value, dtype=np.float64)
        if self._value is not None and timestamp_ns == self._last_ns:
            return self._value.copy()
        if (
            self._value is None
            or self._last_ns is None
            or timestamp_ns < self._last_ns
            or value.shape != self._value.shape
        ):
            self._last_ns, self._value = timestamp_ns, value.copy()
            self._speed = np.zeros_like(self._difference(value))
            return value.copy()
        dt = (timestamp_ns - self._last_ns) * 1e-9
        delta = self._difference(value)
        a_d = _alpha(self.derivative_cutoff_hz, dt)
        speed = delta / dt
        speed_hat = np.where(
            np.isfinite(self._speed), a_d * speed + (1 - a_d) * self._speed, speed
        )
        a = _alpha(self.min_cutoff_hz + self.beta * self._magnitude(speed_hat), dt)
        self._value = self._step(value, delta, a)
        self._speed = np.where(np.isfinite(speed_hat), speed_hat, 0.0)
        self._last_ns = timestamp_ns
        return self._value.copy()

    def _difference(self, value: np.ndarray) -> np.ndarray:
        """How far the sample lies from the estimate."""
        return value - self._value

    @staticmethod
    def _magnitude(speed: np.ndarray) -> np.ndarray:
        """Speed that raises the cutoff: per component for a vector signal."""
        return np.abs(speed)

    def _step(self, value: np.ndarray, delta: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Move the estimate the fraction ``a`` of ``delta`` towards the sample."""
        filtered = self._value + a * delta
        return np.where(np.isfinite(filtered), filtered, value)


class RotationOneEuroFilter(OneEuroFilter):
    """One-euro filter of a 3x3 rotation matrix on the rotation group.

    The difference is the rotation vector from the estimate to the sample (in the estimate's
    frame), its speed is an angular velocity, and a step turns the estimate by a fraction of
    that rotation. So the filter treats every direction of turning alike and has no angle
    wrap: a head turning through +-180 degrees of yaw is one small step.
    """

    def _difference(self, value: np.ndarray) -> np.ndarray:
        rotation_vector, _ = cv2.Rodrigues(self._value.T @ value)
        return rotation_vector.reshape(3)

    @staticmethod
    def _magnitude(speed: np.ndarray) -> np.ndarray:
        return np.linalg.norm(speed)

    def _step(self, value: np.ndarray, delta: np.ndarray, a: np.ndarray) -> np.ndarray:
        turn, _ = cv2.Rodrigues(np.asarray(a * delta, dtype=np.float64).reshape(3, 1))
        return self._value @ turn


class PoseSmoother:
    """One track's smoothing: orientation on the rotation group, position and landmarks."""

    def __init__(self, settings: SmoothingConfig) -> None:
        """One filter per quantity, all with the configured one-euro parameters."""
        parameters = (settings.min_cutoff_hz, settings.beta, settings.derivative_cutoff_hz)
        self._rotation = RotationOneEuroFilter(*parameters)
        self._position = OneEuroFilter(*parameters)
        self._landmarks = OneEuroFilter(*parameters)

    def __call__(
        self,
        timestamp_ns: int,
        rotation: np.ndarray,
        position: np.ndarray,
        landmarks: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Smoothed ``(rotation, position, landmarks)``; landmarks stay ``None`` if absent."""
        smooth_landmarks = (
            None
            if landmarks is None
            else self._landmarks(timestamp_ns, landmarks.ravel()).reshape(landmarks.shape)
        )
        return (
            self._rotation(timestamp_ns, rotation),
            self._position(timestamp_ns, position),
            smooth_landmarks,
        )
