"""Counters and last-seen times for every source and sink.

Filled in by the hub and the sources' contexts; read by the health endpoint
(`/healthz` JSON, `/metrics` Prometheus) and so by `meter-bridge status`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class SourceStats:
    """What one source has done since start."""

    source_type: str
    stale_after_s: float
    readings: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_reading: datetime | None = None
    #: Meters of this source and whether each is available.
    meters: dict[str, bool] = field(default_factory=dict)
    #: Looking for a family by default (discovery.py): healthy while it has found nothing.
    found_by_default: bool = False


@dataclass(slots=True)
class SinkStats:
    """What one sink has done since start."""

    received: int = 0
    #: Events the hub dropped because this sink's queue was full.
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    connected: bool | None = None
    queued: int = 0
    #: Sink-specific figures (spool bytes, quarantined batches...).
    gauges: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class BridgeStats:
    """All the figures of one running bridge."""

    started: datetime
    sources: dict[str, SourceStats] = field(default_factory=dict)
    sinks: dict[str, SinkStats] = field(default_factory=dict)
    #: Every meter's role and name (roles.py), for `meter-bridge status`.
    roles: dict[str, dict[str, str | None]] = field(default_factory=dict)
