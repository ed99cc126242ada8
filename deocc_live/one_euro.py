"""One Euro filter (Casiez et al., CHI 2012) on arrays: little smoothing when things move fast,
much when they are still, so landmarks neither jitter nor lag."""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: float | np.ndarray, dt: float):
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._value: np.ndarray | None = None
        self._derivative: np.ndarray | None = None
        self._time: float | None = None

    def reset(self) -> None:
        self._value = self._derivative = self._time = None

    def __call__(self, value: np.ndarray, time_s: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self._value is None or self._time is None or time_s <= self._time:
            first = self._value is None
            self._value = value.copy() if first else self._value
            self._derivative = np.zeros_like(value) if first else self._derivative
            self._time = time_s if self._time is None else self._time
            if first:
                return value.copy()
            return self._value.copy()
        dt = time_s - self._time
        self._time = time_s
        derivative = (value - self._value) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._derivative = a_d * derivative + (1 - a_d) * self._derivative
        cutoff = self.min_cutoff + self.beta * np.abs(self._derivative)
        a = _alpha(cutoff, dt)
        self._value = a * value + (1 - a) * self._value
        return self._value.copy()
