"""The rule for running totals that go backwards: a pure, stateful filter shared by sources.

Home Assistant treats a `total_increasing` sensor whose value falls by more than 10 %
as a meter reset and starts a new cycle; a smaller fall shows up as negative use.
Some Zigbee plugs and smart-meter gateways briefly report a lower total (rounding,
a reboot that reports 0 once, a stale cached value), so passing totals straight on
would put bogus resets and dips into the Energy dashboard. The rule:

1. A total at or above the last one passed on is passed on.
2. A total below it but not below `reset_fraction` (90 %) of it is a *step back*:
   it is dropped, and the last total stands until the meter climbs past it again.
3. A total below `reset_fraction` of the last one is a *reset candidate*. It is only
   passed on once `confirmations` readings in a row (default 2) have all been below
   that mark and never lower than the one before (a real reset counts up again from
   its new low). Until then the candidates are held back; a reading back at or near
   the old total shows the drop was a glitch and the old total stands.

State is per (meter, quantity) and lives as long as the source runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from ..model import TOTALS, Quantity, Reading


class TotalVerdict(StrEnum):
    """What `TotalGuard.check` decided about one reading of a total."""

    ACCEPTED = "accepted"
    STEP_BACK = "step_back"
    RESET_PENDING = "reset_pending"
    RESET = "reset"


@dataclass(slots=True)
class _Track:
    last: float
    pending: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """Readings to pass on, and a note of every reading that was held back or was a reset."""

    readings: list[Reading]
    notes: list[tuple[Reading, TotalVerdict]]


class TotalGuard:
    """Filters readings of running totals by the rule in the module docstring.

    `reset_fraction` in (0, 1): a total below this share of the last one may be a reset.
    `confirmations` >= 1: readings in a row needed to accept a reset. Never raises.
    """

    def __init__(self, reset_fraction: float = 0.9, confirmations: int = 2) -> None:
        if not 0 < reset_fraction < 1:
            raise ValueError("reset_fraction must be in (0, 1)")
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        self.reset_fraction = reset_fraction
        self.confirmations = confirmations
        self._tracks: dict[tuple[str, Quantity], _Track] = {}

    def last(self, meter_id: str, quantity: Quantity) -> float | None:
        """The last total passed on for this meter and quantity (None before the first)."""
        track = self._tracks.get((meter_id, quantity))
        return None if track is None else track.last

    def check(self, reading: Reading) -> TotalVerdict:
        """Decide about one reading; readings of quantities that are not totals are ACCEPTED."""
        if reading.quantity not in TOTALS:
            return TotalVerdict.ACCEPTED
        key = (reading.meter_id, reading.quantity)
        track = self._tracks.get(key)
        value = reading.value
        if track is None:
            self._tracks[key] = _Track(value)
            return TotalVerdict.ACCEPTED
        if value >= track.last * self.reset_fraction:
            # back near the old total: any pending drop did not last, it was a glitch
            track.pending = []
            if value >= track.last:
                track.last = value
                return TotalVerdict.ACCEPTED
            return TotalVerdict.STEP_BACK
        # a large drop: wait for it to be confirmed by readings that count up from the new low
        if track.pending and value < track.pending[-1]:
            track.pending = [value]
        else:
            track.pending.append(value)
        if len(track.pending) >= self.confirmations:
            track.last, track.pending = value, []
            return TotalVerdict.RESET
        return TotalVerdict.RESET_PENDING

    def filter(self, readings: Iterable[Reading]) -> GuardOutcome:
        """The readings to pass on (ACCEPTED and RESET), with a note for every verdict but ACCEPTED."""
        kept: list[Reading] = []
        notes: list[tuple[Reading, TotalVerdict]] = []
        for reading in readings:
            verdict = self.check(reading)
            if verdict in (TotalVerdict.ACCEPTED, TotalVerdict.RESET):
                kept.append(reading)
            if verdict is not TotalVerdict.ACCEPTED:
                notes.append((reading, verdict))
        return GuardOutcome(kept, notes)

    def forget(self, meter_id: str) -> None:
        """Drop the state of one meter (it was removed or re-paired)."""
        for key in [key for key in self._tracks if key[0] == meter_id]:
            del self._tracks[key]
