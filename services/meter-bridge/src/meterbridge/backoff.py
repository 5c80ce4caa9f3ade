"""Jittered exponential backoff, shared by every transport that reconnects."""

from __future__ import annotations

import random


class Backoff:
    """Delays of `initial`, x`factor` each time, capped at `maximum`, +/- `jitter` (a fraction).

    Jitter keeps a fleet of appliances from reconnecting in lock-step after a
    broker or uplink outage.
    """

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0, jitter: float = 0.2) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds); grows each call."""
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return max(0.0, delay * (1 + random.uniform(-self.jitter, self.jitter)))  # noqa: S311 - not crypto

    def reset(self) -> None:
        """Start again from `initial` (after a success)."""
        self._next = self.initial
