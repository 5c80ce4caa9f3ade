"""Meter sources: one module (or package) per meter family.

Each family splits into a pure parser (bytes/JSON in, `Reading`s out) and a thin
transport. A `Source` runs until cancelled, reconnecting on its own, and hands what
it learns to its `SourceContext`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from ..configbase import SourceConfigBase
from ..ha_entities import EntityCatalog, EntityDescription
from ..logutil import RateLimitedLog
from ..model import Event, MeterAvailability, MeterDescription, Reading
from ..stats import SourceStats
from .totals import VERDICT_LOG, ReadingRules

ConfigT = TypeVar("ConfigT", bound=SourceConfigBase)


class SourceContext:
    """What a source may do: emit events, record errors. Keeps the source's stats.

    `emit` never blocks: the hub queues per sink and drops (and counts) when a sink
    is stuck. Entities a source offers Home Assistant besides its meters' sensors go to
    `catalog` (the bridge's, which the HA sink announces from).

    Every reading passes `rules` (the bridge's one `ReadingRules`: a wrong clock, time that
    goes back, totals that fall, restart or jump; see `sources.totals`) on its way to the
    sinks; `historical` sources (utility data) skip only its clock check.
    """

    def __init__(
        self,
        source_id: str,
        stats: SourceStats,
        emit: Callable[[Event], None],
        catalog: EntityCatalog | None = None,
        rules: ReadingRules | None = None,
        historical: bool = False,
    ) -> None:
        self.source_id = source_id
        self.stats = stats
        self._emit = emit
        self.rules = ReadingRules() if rules is None else rules
        self.historical = historical
        self.catalog = EntityCatalog() if catalog is None else catalog
        self.log = RateLimitedLog(logging.getLogger(f"meterbridge.sources.{source_id}"))
        self._sent_availability: dict[str, bool] = {}

    def readings(self, readings: Iterable[Reading]) -> None:
        """Hand readings on to every sink, through the bridge's rules (held, dropped or continued)."""
        outcome = self.rules.apply(readings, self.historical)
        if outcome.clock_step_s:  # logged once by the rules; counted where it was seen
            self.stats.errors["clock_stepped_back"] += 1
        for reading, verdict in outcome.notes:
            kind, level, message = VERDICT_LOG[verdict]
            self.error(kind, message, reading.meter_id, reading.quantity.value, reading.ts.isoformat(), level=level)
        for reading in outcome.readings:
            self.stats.readings += 1
            if self.stats.last_reading is None or reading.ts > self.stats.last_reading:
                self.stats.last_reading = reading.ts
            self._emit(reading)

    def describe(self, description: MeterDescription) -> None:
        """Announce (or update) a meter's device details."""
        self.stats.meters.setdefault(description.meter_id, False)
        self._emit(description)

    def availability(self, meter_id: str, available: bool) -> None:
        """Mark a meter reachable or not; repeated identical calls are not re-sent."""
        # Compared with what was sent, not with `stats.meters`: `describe` records a new
        # meter there as not (yet) available, and a first `False` must still go out.
        if self._sent_availability.get(meter_id) == available:
            return
        self._sent_availability[meter_id] = available
        self.stats.meters[meter_id] = available
        self._emit(MeterAvailability(meter_id, available))

    def announce(self, entities: Iterable[EntityDescription], part: str = "") -> None:
        """Offer Home Assistant these entities (all of them: one left out since the last call is
        removed); `part` keeps separate sets apart (one per device)."""
        self.catalog.describe(f"{self.source_id}/{part}" if part else self.source_id, entities)

    def error(self, kind: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """Count an error of `kind` and log it, rate-limited per kind."""
        self.stats.errors[kind] += 1
        self.log.log(level, kind, message, *args)


class Source(ABC, Generic[ConfigT]):
    """A running meter source. Subclasses implement `run`."""

    #: The config `type` this class implements.
    source_type: str = ""
    #: Whether its readings are history from elsewhere (utility data, stamped by the utility):
    #: they skip the bridge's clock check (`sources.totals.ClockGate`), not the totals rule.
    historical: bool = False

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @property
    def id(self) -> str:
        """The source id from the config."""
        return self.config.id

    @abstractmethod
    async def run(self, ctx: SourceContext) -> None:
        """Read until cancelled. Reconnects itself; raises only on unrecoverable errors."""
