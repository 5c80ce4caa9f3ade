"""The one rule every source's readings follow before any sink sees them (issue 25).

`SourceContext.readings` passes every reading of every source through one `TotalGuard`
(shared by the whole bridge, its state kept in `totals.path` on the data volume), so what
Home Assistant and InfluxDB see is decided here, once, and never by a source of its own.

**Time never goes back.** Per meter and quantity a reading older than one already applied is
dropped (`stale`): a frame a device re-sends after a reconnect (MQTT QoS 1 redelivery), a
late or duplicated message after a broker restart. A total with the same time and value as
the last one is a `duplicate` and dropped too.

**Totals only go up, and continue across counter restarts.** Per meter and total the guard
keeps the device's last counter value (`raw`), its time, and an `offset` that is added to
every value it passes on (0 until the counter restarts). For a newer reading:

1. a counter at or above the last one, risen by no more than `max_power_kw` could use in
   the time between them, is passed on (plus the offset);
2. a counter below it but not below `reset_fraction` (90 %) of it is a *step back* (rounding,
   a stale cached value): dropped, the last total stands;
3. a counter below 90 % of it (a reboot that restarted it, a lone 0, a replaced meter) or
   above what the meter could have used (a replaced meter with a higher counter, a corrupt
   frame) is a *candidate*: held until `confirmations` readings in a row (default 2) agree
   with it, i.e. each at or above the one before and risen by no more than the meter could
   use. A reading that agrees with the old counter instead shows it was a glitch: the
   candidates are dropped (`total_glitch`) and nothing of them is ever passed on.
4. A confirmed candidate starts a new counter and the total *continues*: after a restart
   (the first candidate is no more than the meter could have used since the last reading:
   the counter started again from 0) the old counter is added to the offset, so nothing is
   lost and nothing counted twice (`total_reset`); after a replacement (a counter far from
   the old one, up or down) the offset is set so that the total continues where it was
   (`total_replaced`): the energy between the old meter's last reading and the new one's
   first is not known and counts as 0. The held candidates are then passed on in order.

So a total a sink sees never falls and never jumps by more than the meter could have used;
InfluxDB's `increase()` and Home Assistant's statistics see one counter for the life of the
meter id. A reading the guard holds or drops is counted in the source's `errors` by verdict.

**A wrong clock** (a Pi 4 has no real-time clock: after a power cut it starts at an old
time and jumps when NTP answers) is handled by `ClockGate` below, before this rule. A clock
that was *ahead* and steps back (NTP) would leave times in the future here, and every reading
after the step would be dropped as `stale` until real time caught up: `ReadingRules` sees the
step (the wall clock falls against the monotonic one) and `TotalGuard.rebase` moves those
times back by it, keeping `raw` and `offset`.

State per (meter, total) is `raw`, `ts` and `offset`; `TotalsStore` writes it to a small
JSON file (atomically) every `save_interval_s` (15 min) when it changed, at once when an
offset changed, and at shutdown. A `kill -9` can lose the last `save_interval_s` of `raw`/`ts`
updates only: the offsets are always saved, and a counter compared with an older `raw` still
passes rule 1. Why not more often: each save is a new file, an fsync and a rename, which sends
the SD card 68 KB with ext4's journal and metadata (measured, docs/benchmarks.md "To the card");
every 15 minutes that is 6.7 MB a day, once a minute it would be ~100 MB. What an older `raw` lets through after a
`kill -9` is a frame older than the last one applied but newer than the saved one arriving
right after the restart; the bridge's MQTT sessions are clean (no redelivery to it), so only
a device re-sending old frames at that moment could do that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..clocksync import kernel_clock_synced
from ..model import TOTALS, Quantity, Reading

_LOGGER = logging.getLogger(__name__)

#: Version of the state file's layout.
STATE_VERSION = 1
_HOUR_S = 3600.0


class TotalVerdict(StrEnum):
    """What `TotalGuard` decided about one reading."""

    ACCEPTED = "accepted"
    #: Older than a reading already applied for this meter and quantity: dropped.
    STALE = "stale"
    #: The same time and total as the last one applied: dropped.
    DUPLICATE = "duplicate"
    #: A total a little below the last one: dropped.
    STEP_BACK = "step_back"
    #: A total far below (or implausibly far above) the last one: held until confirmed.
    RESET_PENDING = "reset_pending"
    #: Held candidates that a reading back on the old counter showed to be a glitch: dropped.
    GLITCH = "glitch"
    #: Confirmed restart of the counter (from 0): the total continues, old counter kept.
    RESET = "reset"
    #: Confirmed new counter far from the old one (a replaced meter): the total continues.
    REPLACED = "replaced"


#: Verdicts whose reading is passed on.
PASSED = frozenset({TotalVerdict.ACCEPTED, TotalVerdict.RESET, TotalVerdict.REPLACED})


@dataclass(slots=True)
class _Track:
    raw: float
    ts: float
    offset: float = 0.0
    #: The last total passed on (`raw + offset`, but never below an earlier one by rounding).
    passed: float = 0.0
    #: Held candidates of a new counter, oldest first.
    pending: list[Reading] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """Readings to pass on (totals continued), and a note of every reading not simply accepted."""

    readings: list[Reading]
    notes: list[tuple[Reading, TotalVerdict]]
    #: Seconds the wall clock stepped back just before these readings (0: it did not).
    clock_step_s: float = 0.0


def _seconds(ts: datetime) -> float:
    return ts.timestamp()


class TotalGuard:
    """Applies the rule in the module docstring to a stream of readings (pure but for its state).

    `reset_fraction` in (0, 1): a total below this share of the last one is a candidate.
    `confirmations` >= 1: readings in a row that confirm a new counter.
    `max_power_kw` > 0: the most a meter can use; a total rising faster is a candidate.
    `grace_s`: a rise is compared with `max_power_kw` over at least this long (timestamps
    of some devices have coarse or irregular steps). Never raises on a reading.
    """

    def __init__(
        self,
        reset_fraction: float = 0.9,
        confirmations: int = 2,
        max_power_kw: float = 100.0,
        grace_s: float = 60.0,
    ) -> None:
        if not 0 < reset_fraction < 1:
            raise ValueError("reset_fraction must be in (0, 1)")
        if confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        if not max_power_kw > 0:
            raise ValueError("max_power_kw must be positive")
        self.reset_fraction = reset_fraction
        self.confirmations = confirmations
        self.max_power_kw = max_power_kw
        self.grace_s = grace_s
        self._tracks: dict[tuple[str, Quantity], _Track] = {}
        #: Newest time applied per (meter, quantity) of quantities that are not totals.
        self._latest: dict[tuple[str, Quantity], float] = {}
        #: Set when state worth saving changed; `structural` when an offset changed.
        self.dirty = False
        self.structural = False

    # -- queries ---------------------------------------------------------------------------

    def last(self, meter_id: str, quantity: Quantity) -> float | None:
        """The last total passed on for this meter and quantity (None before the first)."""
        track = self._tracks.get((meter_id, quantity))
        return None if track is None else track.passed

    def offset(self, meter_id: str, quantity: Quantity) -> float:
        """What is added to the device's counter of this total (0 until it restarted)."""
        track = self._tracks.get((meter_id, quantity))
        return 0.0 if track is None else track.offset

    # -- the rule ----------------------------------------------------------------------------

    def _plausible(self, rise: float, dt_s: float) -> bool:
        return rise <= self.max_power_kw * max(dt_s, self.grace_s) / _HOUR_S

    def _fits(self, value: float, ts: float, raw: float, raw_ts: float) -> bool:
        """Whether a counter reading `value` at `ts` continues a counter at `raw` (`raw_ts`)."""
        return value >= raw and self._plausible(value - raw, ts - raw_ts)

    def _continued(self, reading: Reading, track: _Track) -> Reading:
        # max(): (total - first) + first can round below total, and what passes never falls
        value = max(reading.value + track.offset, track.passed)
        track.passed = value
        if value == reading.value:
            return reading
        return Reading(reading.meter_id, reading.quantity, value, reading.unit, reading.ts)

    def filter(self, readings: Iterable[Reading]) -> GuardOutcome:
        """The readings to pass on, totals continued; a note for every verdict but ACCEPTED."""
        kept: list[Reading] = []
        notes: list[tuple[Reading, TotalVerdict]] = []
        for reading in readings:
            if reading.quantity in TOTALS:
                self._total(reading, kept, notes)
                continue
            key = (reading.meter_id, reading.quantity)
            ts = _seconds(reading.ts)
            latest = self._latest.get(key)
            if latest is not None and ts < latest:
                notes.append((reading, TotalVerdict.STALE))
                continue
            self._latest[key] = ts
            kept.append(reading)
        return GuardOutcome(kept, notes)

    def _total(self, reading: Reading, kept: list[Reading], notes: list[tuple[Reading, TotalVerdict]]) -> None:
        key = (reading.meter_id, reading.quantity)
        value, ts = reading.value, _seconds(reading.ts)
        track = self._tracks.get(key)
        if track is None:
            self._tracks[key] = _Track(value, ts, passed=value)
            self.dirty = True
            kept.append(reading)
            return
        newest = track.pending[-1] if track.pending else None
        if ts < track.ts or (newest is not None and ts < _seconds(newest.ts)):
            notes.append((reading, TotalVerdict.STALE))
            return
        if ts == track.ts and value == track.raw and newest is None:
            notes.append((reading, TotalVerdict.DUPLICATE))
            return
        if newest is not None:
            if value >= track.raw * self.reset_fraction and self._plausible(value - track.raw, ts - track.ts):
                # back on the old counter: the candidates were a glitch
                notes.extend((held, TotalVerdict.GLITCH) for held in track.pending)
                track.pending = []
            else:
                if self._fits(value, ts, newest.value, _seconds(newest.ts)):
                    track.pending.append(reading)
                else:
                    notes.extend((held, TotalVerdict.GLITCH) for held in track.pending)
                    track.pending = [reading]
                if len(track.pending) >= self.confirmations:
                    self._confirm(track, kept, notes)
                else:
                    notes.append((reading, TotalVerdict.RESET_PENDING))
                return
        if self._fits(value, ts, track.raw, track.ts):
            track.raw, track.ts = value, ts
            self.dirty = True
            kept.append(self._continued(reading, track))
        elif track.raw > value >= track.raw * self.reset_fraction:
            notes.append((reading, TotalVerdict.STEP_BACK))
        else:
            track.pending = [reading]
            if self.confirmations <= 1:
                self._confirm(track, kept, notes)
            else:
                notes.append((reading, TotalVerdict.RESET_PENDING))

    def _confirm(self, track: _Track, kept: list[Reading], notes: list[tuple[Reading, TotalVerdict]]) -> None:
        first, last = track.pending[0], track.pending[-1]
        total = track.passed
        since_s = _seconds(first.ts) - track.ts
        if first.value < track.raw and self._plausible(first.value, since_s):
            verdict = TotalVerdict.RESET  # the counter started again from 0
            track.offset = total
        else:
            verdict = TotalVerdict.REPLACED  # a counter far from the old one: continue where we were
            track.offset = total - first.value
        for held in track.pending:
            kept.append(self._continued(held, track))
        notes.append((first, verdict))
        track.raw, track.ts, track.pending = last.value, _seconds(last.ts), []
        self.dirty = self.structural = True

    def rebase(self, now_s: float, step_s: float) -> int:
        """After the wall clock stepped back `step_s` seconds to `now_s`: times ahead of `now_s` are
        moved back by `step_s` (not after `now_s`), so that they no longer make later readings
        stale; `raw`, `offset` and the total stay, so it neither falls nor counts twice. Held
        candidates are moved likewise, in order. Returns how many (meter, quantity) moved."""

        def back(ts: float) -> float:
            return min(ts - step_s, now_s) if ts > now_s else ts

        moved = 0
        for track in self._tracks.values():
            if track.ts <= now_s and not track.pending:
                continue
            if track.ts > now_s:
                moved += 1
            track.ts = earliest = back(track.ts)
            pending: list[Reading] = []
            for held in track.pending:
                ts = max(back(_seconds(held.ts)), earliest)  # the order of the candidates stands
                pending.append(held if ts == _seconds(held.ts) else _stamped(held, datetime.fromtimestamp(ts, UTC)))
                earliest = ts
            track.pending = pending
        for key, ts in self._latest.items():
            if ts > now_s:
                self._latest[key] = back(ts)
                moved += 1
        if moved:
            self.dirty = self.structural = True  # saved at once: the file's `saved_at` is right again
        return moved

    def forget(self, meter_id: str) -> None:
        """Drop the state of one meter (it was removed or re-paired)."""
        for mapping in (self._tracks, self._latest):
            for key in [key for key in mapping if key[0] == meter_id]:
                del mapping[key]
        self.dirty = self.structural = True

    # -- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, dict[str, dict[str, float]]]:
        """The state worth keeping across restarts: meter -> total -> `raw`, `ts`, `offset`."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (meter_id, quantity), track in sorted(self._tracks.items()):
            out.setdefault(meter_id, {})[quantity.value] = {"raw": track.raw, "ts": track.ts, "offset": track.offset}
        return out

    def restore(self, state: Any) -> list[str]:
        """Take back what `state()` returned (from a file: anything malformed is skipped and named)."""
        problems: list[str] = []
        if not isinstance(state, dict):
            return ["not an object"]
        for meter_id, totals in state.items():
            if not isinstance(totals, dict):
                problems.append(f"{meter_id}: not an object")
                continue
            for name, entry in totals.items():
                try:
                    quantity = Quantity(name)
                    raw, ts, offset = (float(entry[k]) for k in ("raw", "ts", "offset"))
                except (ValueError, KeyError, TypeError) as err:
                    problems.append(f"{meter_id}.{name}: {err!r}"[:200])
                    continue
                if quantity not in TOTALS or not all(map(math.isfinite, (raw, ts, offset))) or raw < 0:
                    problems.append(f"{meter_id}.{name}: not a total or not finite")
                    continue
                self._tracks[(str(meter_id), quantity)] = _Track(raw, ts, offset, raw + offset)
        return problems


class TotalsStore:
    """Keeps a `TotalGuard`'s state in a JSON file, written atomically (temp file, fsync, rename).

    Why a file of its own and not the spool: the bridge runs without InfluxDB too, and the state
    is a few hundred bytes written once a minute at most (see `maybe_save`). The file also
    carries the wall-clock time of the save (`saved_at`): `ClockGate` takes a clock that is
    behind it as wrong, unless the kernel says the clock is synchronized (then `saved_at` came
    from a clock that was ahead, and the meter times saved with it are moved back).
    """

    def __init__(
        self,
        path: Path | None,
        guard: TotalGuard,
        save_interval_s: float = 900.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.guard = guard
        self.save_interval_s = save_interval_s
        self._monotonic = monotonic
        self._wall = wall
        self._saved_mono = monotonic()
        #: Wall-clock time (Unix s) of the newest save found on disk at `load` (0: none).
        self.saved_at = 0.0
        self.saves = 0

    def load(self) -> None:
        """Read the file if there is one; a broken file is logged (naming it) and ignored."""
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            _LOGGER.error("Totals state %s cannot be read (%s): starting without it", self.path, err)
            return
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            _LOGGER.error("Totals state %s: unknown layout, starting without it", self.path)
            return
        saved_at = data.get("saved_at")
        if isinstance(saved_at, int | float) and math.isfinite(saved_at):
            self.saved_at = float(saved_at)
        for problem in self.guard.restore(data.get("meters", {})):
            _LOGGER.warning("Totals state %s: skipped %s", self.path, problem)

    def maybe_save(self) -> None:
        """Save when an offset changed, or when anything changed and `save_interval_s` passed."""
        guard = self.guard
        if not guard.dirty:
            return
        if guard.structural or self._monotonic() - self._saved_mono >= self.save_interval_s:
            self.save()

    def save(self) -> None:
        """Write the state now (errors are logged, never raised: the bridge goes on)."""
        self._saved_mono = self._monotonic()
        self.guard.dirty = self.guard.structural = False
        if self.path is None:
            return
        body = {"version": STATE_VERSION, "saved_at": self._wall(), "meters": self.guard.state()}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as handle:
                json.dump(body, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self.saves += 1
        except OSError as err:
            _LOGGER.error("Totals state %s cannot be written: %s", self.path, err)
            with contextlib.suppress(OSError):
                tmp.unlink()


#: No reading of a live source can be older than this bridge: a timestamp before it comes from
#: a clock that was never set (a Pi 4 booting without its network, a Shelly before SNTP, an
#: EMU-2 that has not heard the meter's time). Raise it with a release, never lower it.
CLOCK_FLOOR = datetime(2026, 1, 1, tzinfo=UTC)
#: A reading stamped within this of the bridge's clock at receipt was stamped by that clock.
_OWN_CLOCK_S = 5.0


def _stamped(reading: Reading, ts: datetime) -> Reading:
    """The reading at another time (re-stamped)."""
    return Reading(reading.meter_id, reading.quantity, reading.value, reading.unit, ts)


@dataclass(slots=True)
class _Held:
    reading: Reading
    mono: float
    #: The bridge's (wrong) wall clock at receipt.
    wall: float


class ClockGate:
    """Keeps readings stamped by a wrong clock until the time is known, then re-stamps them.

    The bridge's wall clock is taken as wrong while it is before `floor`: the later of
    `CLOCK_FLOOR` and the wall-clock time of the last save of the totals state (a clock
    behind a time this bridge has already seen went back: a Pi without a real-time clock
    after a power cut). Then:

    - a reading stamped at or after `floor` carries a clock that was set (the device's own, an
      EMU-2 has the utility meter's time): it passes, and tells the gate the time;
    - any other reading is held (at most `max_held`, oldest dropped and counted) with the
      monotonic time it arrived, which no clock step moves;
    - as soon as the time is known (the wall clock passed `floor`, or a set device clock
      spoke), held readings are released: one stamped by the bridge's clock (within 5 s of it
      at receipt) or before `CLOCK_FLOOR` is re-stamped at `now - (monotonic age)`; one from a
      device clock that only lags keeps its time.

    While the wall clock is right, a reading stamped before `CLOCK_FLOOR` (a device clock not
    set yet) is re-stamped with its arrival time at once. Historical sources (utility data)
    do not pass here: their times come from the utility, not from a clock of this machine.

    A floor from the last save can itself be wrong: saved by a clock that was ahead. When the
    wall clock is behind it but the kernel says it is synchronized (`synced`, by default
    `clocksync.kernel_clock_synced`: adjtimex(2), what chrony and `timedatectl` use), the floor
    falls to `CLOCK_FLOOR` (logged once) and nothing is held for it; when the kernel says no
    or cannot tell, the floor stands as above.

    A clock that was ahead and steps back is seen by `stepped_back` (the wall clock falls
    against the monotonic one by more than `step_tolerance_s`); a reading stamped by it just
    before the step and handed on just after is moved back by the step. Readings that already
    went on with the times of the clock that was ahead cannot be recalled.
    """

    def __init__(
        self,
        floor_s: float = CLOCK_FLOOR.timestamp(),
        max_held: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        synced: Callable[[], bool | None] = kernel_clock_synced,
        step_tolerance_s: float = 60.0,
    ) -> None:
        self.floor_s = max(floor_s, CLOCK_FLOOR.timestamp())
        self.max_held = max_held
        self.step_tolerance_s = step_tolerance_s
        self._monotonic = monotonic
        self._wall = wall
        self._synced = synced
        self._held: list[_Held] = []
        #: (a known right time, the monotonic time it was right at), from a set device clock.
        self._reference: tuple[float, float] | None = None
        self._dropped_floor: tuple[float, float] | None = None
        #: The wall clock minus the monotonic one at the last look (None before the first).
        self._wall_offset: float | None = None
        #: Seconds of the last backward step of the wall clock (0: none seen).
        self.last_step_s = 0.0
        #: The wall clock just after that step.
        self.stepped_to_s = 0.0
        #: The monotonic time the step was seen (readings in flight across it arrive within
        #: `step_tolerance_s` of it; after that, `_before_step` leaves readings alone).
        self._stepped_at_mono = 0.0
        self.steps_back = 0
        self.dropped = 0
        self.restamped = 0

    @property
    def held(self) -> int:
        """Readings waiting for the time to be known."""
        return len(self._held)

    def now(self) -> float | None:
        """The right time (Unix s) if known: the wall clock when right, else a device's."""
        wall = self._wall()
        if wall >= self.floor_s:
            self._reference = None
            return wall
        if self._reference is not None:
            known, at = self._reference
            return known + (self._monotonic() - at)
        return None

    def stepped_back(self) -> float:
        """Seconds the wall clock stepped back since the last call (0 if it did not).

        Seen against the monotonic clock, which no step moves: their difference falls by the
        step. A fall within `step_tolerance_s` is NTP slewing or jitter, not a step. A step
        forward (NTP setting a clock that was behind) is `floor_s`'s business, not this one's.
        """
        wall = self._wall()
        offset = wall - self._monotonic()
        previous, self._wall_offset = self._wall_offset, offset
        if previous is None or previous - offset <= self.step_tolerance_s:
            return 0.0
        self.last_step_s, self.stepped_to_s = previous - offset, wall
        self._stepped_at_mono = self._monotonic()
        self.steps_back += 1
        return self.last_step_s

    def _drop_floor_if_synced(self, wall: float) -> None:
        """The kernel says the clock is synchronized: a floor from the last save is not evidence."""
        if not CLOCK_FLOOR.timestamp() <= wall < self.floor_s or self._synced() is not True:
            return
        _LOGGER.warning(
            "The clock is %.0f s behind the last save of the totals state (%s), but the kernel says it is "
            "synchronized (NTP): the saved time came from a clock that was ahead; the clock is taken as right",
            self.floor_s - wall,
            datetime.fromtimestamp(self.floor_s, UTC).isoformat(),
        )
        self._dropped_floor = (self.floor_s, wall)
        self.floor_s = CLOCK_FLOOR.timestamp()

    def take_dropped_floor(self) -> tuple[float, float] | None:
        """(the floor, the wall clock) when `admit` last dropped a floor saved by a clock ahead, once."""
        dropped, self._dropped_floor = self._dropped_floor, None
        return dropped

    def _restamp(self, held: _Held, now: float, mono: float) -> Reading:
        reading = held.reading
        ts = reading.ts.timestamp()
        if abs(ts - held.wall) > _OWN_CLOCK_S and ts >= CLOCK_FLOOR.timestamp():
            return reading  # a device clock that lags, not a wrong one: its time stands
        self.restamped += 1
        return _stamped(reading, datetime.fromtimestamp(now - (mono - held.mono), UTC))

    def _before_step(self, reading: Reading, wall: float) -> Reading:
        """A reading the wall clock stamped just before it stepped back, re-stamped by the step.

        A source may stamp a reading and hand it on a moment later, after the step: stamped
        `last_step_s` ahead of the clock (within a minute's delay), it came from the clock as it
        was; its time minus the step is when it was taken. A right device clock is never that
        far ahead. Only for `step_tolerance_s` after the step was seen: a reading in flight across
        it has arrived by then, and a later reading that far ahead is a device's business."""
        step = self.last_step_s
        if not step or self._monotonic() - self._stepped_at_mono > self.step_tolerance_s:
            return reading
        ts = reading.ts.timestamp()
        if not wall - self.step_tolerance_s <= ts - step <= wall + _OWN_CLOCK_S:
            return reading
        self.restamped += 1
        return _stamped(reading, datetime.fromtimestamp(ts - step, UTC))

    def admit(self, readings: Iterable[Reading]) -> list[Reading]:
        """The readings that may go on now (held ones released first, re-stamped), in order."""
        mono, wall = self._monotonic(), self._wall()
        floor = CLOCK_FLOOR.timestamp()
        self._drop_floor_if_synced(wall)
        incoming = [self._before_step(reading, wall) for reading in readings]
        if wall < self.floor_s:
            for reading in incoming:
                ts = reading.ts.timestamp()
                if ts >= self.floor_s and ts >= wall + _OWN_CLOCK_S:
                    self._reference = (ts, mono)  # a set clock: it tells the time
        now = self.now()
        out: list[Reading] = []
        if now is not None and self._held:
            out.extend(self._restamp(held, now, mono) for held in self._held)
            self._held = []
        for reading in incoming:
            ts = reading.ts.timestamp()
            if now is not None:
                # before the floor, or stamped by the wrong wall clock: the time is known from a device
                if ts < floor or (abs(ts - wall) <= _OWN_CLOCK_S and wall < self.floor_s):
                    self.restamped += 1
                    reading = _stamped(reading, datetime.fromtimestamp(now, UTC))
                out.append(reading)
            elif ts >= self.floor_s:
                out.append(reading)
            else:
                self._held.append(_Held(reading, mono, wall))
                if len(self._held) > self.max_held:
                    del self._held[0]
                    self.dropped += 1
        return out


#: How each verdict is counted in the source's `errors` and logged (kind, level); ACCEPTED is neither.
VERDICT_LOG: dict[TotalVerdict, tuple[str, int, str]] = {
    TotalVerdict.STALE: ("stale_reading", logging.DEBUG, "%s: %s at %s is older than one applied: dropped"),
    TotalVerdict.DUPLICATE: ("duplicate", logging.DEBUG, "%s: %s at %s came again: dropped"),
    TotalVerdict.STEP_BACK: ("total_step_back", logging.DEBUG, "%s: %s at %s stepped back: ignored"),
    TotalVerdict.RESET_PENDING: ("total_drop", logging.INFO, "%s: %s at %s left the counter: held until confirmed"),
    TotalVerdict.GLITCH: ("total_glitch", logging.INFO, "%s: %s at %s was a glitch: dropped"),
    TotalVerdict.RESET: ("total_reset", logging.WARNING, "%s: %s counter restarted at %s: the total continues"),
    TotalVerdict.REPLACED: ("total_replaced", logging.WARNING, "%s: %s new counter at %s: the total continues"),
}


class ReadingRules:
    """The shared path every source's readings take: `ClockGate`, then `TotalGuard`, state saved.

    One per bridge (`app.Bridge` builds it from the `totals` section); a `SourceContext` made
    without one gets its own in memory (tests, one-shot imports).
    """

    def __init__(
        self, guard: TotalGuard | None = None, store: TotalsStore | None = None, clock: ClockGate | None = None
    ) -> None:
        self.guard = TotalGuard() if guard is None else guard
        self.store = TotalsStore(None, self.guard) if store is None else store
        #: By default floored at the last save; a gate given here (tests) brings its own floor.
        self.clock = ClockGate(floor_s=self.store.saved_at) if clock is None else clock

    @classmethod
    def from_file(cls, path: Path | None, save_interval_s: float = 900.0, max_power_kw: float = 100.0) -> ReadingRules:
        """Rules whose state lives in `path` (loaded now)."""
        guard = TotalGuard(max_power_kw=max_power_kw)
        store = TotalsStore(path, guard, save_interval_s)
        store.load()
        return cls(guard, store)

    def apply(self, readings: Iterable[Reading], historical: bool = False) -> GuardOutcome:
        """What of `readings` goes on (re-stamped, totals continued), with notes on the rest."""
        step_s = self.clock.stepped_back()
        if step_s:
            # to the wall clock after the step even if the gate does not take it as right yet:
            # every time after it came from the clock before the step
            moved = self.guard.rebase(self.clock.stepped_to_s, step_s)
            _LOGGER.warning(
                "The clock stepped back %.0f s (NTP corrected a clock that was ahead): %d meter times moved "
                "back with it so that new readings are not dropped as older; readings already sent with "
                "the times of the clock that was ahead stay as they are",
                step_s,
                moved,
            )
        admitted = list(readings) if historical else self.clock.admit(readings)
        dropped = self.clock.take_dropped_floor()
        if dropped is not None:
            # the state saved with that floor has meter times from the same clock ahead: moved back
            # as for a step (by at most how far the floor was ahead), else they would make readings stale
            floor_s, wall_s = dropped
            self.guard.rebase(wall_s, floor_s - wall_s)
        outcome = self.guard.filter(admitted)
        self.store.maybe_save()
        return replace(outcome, clock_step_s=step_s) if step_s else outcome

    def close(self) -> None:
        """Save the state if it changed since the last save (at shutdown)."""
        if self.guard.dirty:
            self.store.save()
