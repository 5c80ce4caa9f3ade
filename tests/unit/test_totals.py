"""The one rule every reading passes (`sources.totals`): time, totals, restarts, replaced meters, clocks."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.model import Event, Quantity, Reading
from meterbridge.sources import SourceContext
from meterbridge.sources.totals import (
    CLOCK_FLOOR,
    ClockGate,
    ReadingRules,
    TotalGuard,
    TotalsStore,
    TotalVerdict,
)
from meterbridge.stats import SourceStats

T0 = datetime(2026, 11, 21, tzinfo=UTC)
STEP_S = 30


def _r(value: float, i: int = 0, quantity: Quantity = Quantity.ENERGY_IMPORT, meter: str = "m") -> Reading:
    return Reading.of(meter, quantity, value, T0 + timedelta(seconds=STEP_S * i))


def _run(values: list[float], guard: TotalGuard | None = None) -> tuple[list[float], list[TotalVerdict]]:
    """Feed one total at steps of 30 s; what passed and every verdict but ACCEPTED."""
    guard = TotalGuard() if guard is None else guard
    out = guard.filter(_r(v, i) for i, v in enumerate(values))
    return [r.value for r in out.readings], [v for _, v in out.notes]


A, S, P, G = TotalVerdict.ACCEPTED, TotalVerdict.STEP_BACK, TotalVerdict.RESET_PENDING, TotalVerdict.GLITCH
R, X = TotalVerdict.RESET, TotalVerdict.REPLACED


@pytest.mark.parametrize(
    ("values", "passed", "notes"),
    [
        ([10.0, 10.5, 10.5, 11.0], [10.0, 10.5, 10.5, 11.0], []),
        ([100.0, 99.99, 100.0, 100.2], [100.0, 100.0, 100.2], [S]),  # a small step back is ignored
        ([100.0, 95.0, 99.0, 101.0], [100.0, 101.0], [S, S]),  # ... until the meter climbs past it
        # a Shelly reboot restarts its counter: the total continues, nothing counted twice
        ([100.0, 100.5, 0.01, 0.02, 0.03], [100.0, 100.5, 100.51, 100.52, 100.53], [P, R]),
        # a lone 0 (or a lone spike) is a glitch: nothing of it passes
        ([100.0, 0.0, 100.1], [100.0, 100.1], [P, G]),
        ([100.0, 99_999.0, 100.1], [100.0, 100.1], [P, G]),
        ([100.0, 0.0, 95.0, 101.0], [100.0, 101.0], [P, G, S]),
        # a replaced meter, its counter far below or far above the old one: no spike, no dip
        ([73_000.0, 5_000.0, 5_000.1, 5_000.3], [73_000.0, 73_000.0, 73_000.1, 73_000.3], [P, X]),
        ([100.0, 50_000.0, 50_000.1], [100.0, 100.0, 100.1], [P, X]),
        # a candidate lower than the one before starts the count again
        ([100.0, 5.0, 3.0, 3.1], [100.0, 100.0, 100.1], [P, G, P, X]),
        ([0.0, 0.0, 0.001], [0.0, 0.0, 0.001], []),
    ],
)
def test_rule(values: list[float], passed: list[float], notes: list[TotalVerdict]) -> None:
    got, verdicts = _run(values)
    assert got == pytest.approx(passed)
    assert verdicts == notes


def test_a_frame_sent_again_after_newer_ones_never_lowers_the_total() -> None:
    """Issue 25: QoS 1 redelivered an older frame (73.4644 after 73.4647); it used to pass."""
    guard = TotalGuard()
    first = guard.filter([_r(73.4644, 1), _r(73.4647, 2), _r(7.0, 2, Quantity.POWER)])
    again = guard.filter([_r(73.4644, 1), _r(73.4647, 2), _r(5.0, 1, Quantity.POWER)])
    assert [r.value for r in first.readings] == [73.4644, 73.4647, 7.0]
    assert again.readings == []
    assert [v for _, v in again.notes] == [TotalVerdict.STALE, TotalVerdict.DUPLICATE, TotalVerdict.STALE]
    assert guard.last("m", Quantity.ENERGY_IMPORT) == 73.4647


def test_power_older_than_applied_is_dropped_and_meters_are_separate() -> None:
    guard = TotalGuard()
    out = guard.filter(
        [
            _r(500.0, 2, Quantity.POWER),
            _r(-500.0, 1, Quantity.POWER),  # older: would show as the current power
            _r(10.0, meter="a"),
            _r(1.0, meter="b"),
            _r(10.0, 0, Quantity.ENERGY_EXPORT, meter="b"),
            _r(9.99, 1, meter="a"),
        ]
    )
    assert [(r.meter_id, r.quantity.value, r.value) for r in out.readings] == [
        ("m", "power", 500.0),
        ("a", "energy_import", 10.0),
        ("b", "energy_import", 1.0),
        ("b", "energy_export", 10.0),
    ]
    assert [v for _, v in out.notes] == [TotalVerdict.STALE, TotalVerdict.STEP_BACK]


def test_confirmations_of_one_accept_a_restart_at_once() -> None:
    got, verdicts = _run([10.0, 0.5], TotalGuard(confirmations=1))
    assert got == [10.0, 10.5]
    assert verdicts == [R]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="reset_fraction"):
        TotalGuard(reset_fraction=1.0)
    with pytest.raises(ValueError, match="confirmations"):
        TotalGuard(confirmations=0)
    with pytest.raises(ValueError, match="max_power_kw"):
        TotalGuard(max_power_kw=0)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.integers(min_value=-3, max_value=400)),
        min_size=1,
        max_size=40,
    )
)
def test_what_passes_never_falls_and_never_jumps(steps: list[tuple[float, int]]) -> None:
    """Whatever the counter does (late frames, restarts, glitches, other meters' counters), what the
    sinks see never falls and never rises faster than `max_power_kw` allows."""
    guard = TotalGuard()
    passed: list[Reading] = []
    t = 0
    for value, dt in steps:
        t += dt
        passed.extend(
            guard.filter([Reading.of("m", Quantity.ENERGY_IMPORT, value, T0 + timedelta(seconds=t))]).readings
        )
    for before, after in itertools.pairwise(passed):
        assert after.ts >= before.ts
        assert after.value >= before.value
        dt_s = (after.ts - before.ts).total_seconds()
        assert after.value - before.value <= guard.max_power_kw * max(dt_s, guard.grace_s) / 3600 + 1e-9
    if passed:
        assert guard.last("m", Quantity.ENERGY_IMPORT) == pytest.approx(passed[-1].value)


# -- the state across restarts ---------------------------------------------------------------------


def test_state_survives_a_restart_and_a_restart_of_the_counter_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "totals.json"
    guard = TotalGuard()
    store = TotalsStore(path, guard, save_interval_s=3600)
    guard.filter([_r(100.0, 0), _r(0.2, 1), _r(0.3, 2)])  # restarted: offset 100 saved at once
    store.maybe_save()
    assert json.loads(path.read_text())["meters"]["m"]["energy_import"]["offset"] == 100.0
    guard.filter([_r(0.4, 3)])
    store.maybe_save()  # a counter update alone waits for the interval: the file still has 0.3
    assert json.loads(path.read_text())["meters"]["m"]["energy_import"]["raw"] == 0.3

    # kill -9 here; the bridge starts again from the file
    again = TotalGuard()
    TotalsStore(path, again).load()
    got = again.filter([_r(0.4, 3), _r(0.5, 4)])  # the frame it had not saved, then a new one
    assert [r.value for r in got.readings] == pytest.approx([100.4, 100.5])


def test_a_broken_state_file_is_named_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "totals.json"
    path.write_text("{not json")
    guard = TotalGuard()
    TotalsStore(path, guard).load()
    assert str(path) in caplog.text
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "saved_at": 0,
                "meters": {"m": {"energy_import": {"raw": 1, "ts": 0, "offset": 2}, "power": {"raw": 1}}, "n": 5},
            }
        )
    )
    TotalsStore(path, guard).load()
    assert guard.last("m", Quantity.ENERGY_IMPORT) == 3.0
    assert "m.power" in caplog.text
    assert "n: not an object" in caplog.text


# -- a wrong clock ---------------------------------------------------------------------------------


class _Clocks:
    """A wall clock the test sets, and a monotonic one it moves."""

    def __init__(self, wall: float) -> None:
        self.wall_s = wall
        self.mono_s = 1000.0

    def wall(self) -> float:
        return self.wall_s

    def mono(self) -> float:
        return self.mono_s

    def tick(self, seconds: float) -> None:
        self.wall_s += seconds
        self.mono_s += seconds


def _at(seconds: float, value: float = 1.0, quantity: Quantity = Quantity.POWER) -> Reading:
    return Reading.of("m", quantity, value, datetime.fromtimestamp(seconds, UTC))


def test_a_pi_booting_in_the_past_holds_readings_and_stamps_them_right_when_ntp_answers() -> None:
    real = T0.timestamp()
    booted_at = datetime(2025, 3, 1, tzinfo=UTC).timestamp()  # before CLOCK_FLOOR: the OS image's build time
    clocks = _Clocks(booted_at)
    gate = ClockGate(monotonic=clocks.mono, wall=clocks.wall)
    assert gate.admit([_at(clocks.wall_s, 5.0)]) == []  # stamped by the wrong clock: held
    clocks.tick(10)
    assert gate.admit([_at(clocks.wall_s, 6.0)]) == []
    assert gate.held == 2
    clocks.tick(10)
    clocks.wall_s = real  # NTP answers: the clock jumps forward
    out = gate.admit([_at(clocks.wall_s, 7.0)])
    assert [(r.value, r.ts.timestamp()) for r in out] == [(5.0, real - 20), (6.0, real - 10), (7.0, real)]
    assert all(r.ts.year == T0.year for r in out)


def test_a_clock_behind_the_last_save_is_wrong_too_and_a_set_device_clock_tells_the_time() -> None:
    real = T0.timestamp()
    clocks = _Clocks(real - 3 * 3600)  # fake-hwclock restored a time from before the power cut
    gate = ClockGate(floor_s=real - 600, monotonic=clocks.mono, wall=clocks.wall)
    assert gate.admit([_at(clocks.wall_s)]) == []
    clocks.tick(5)
    # an EMU-2 reports with the utility meter's time: that passes, and now the time is known
    device = _at(real, 2.0, Quantity.ENERGY_IMPORT)
    out = gate.admit([device])
    assert [(r.value, r.ts.timestamp()) for r in out] == [(1.0, real - 5), (2.0, real)]
    clocks.tick(1)
    (own,) = gate.admit([_at(clocks.wall_s, 3.0)])  # the bridge's own stamp, moved to the known time
    assert own.ts.timestamp() == real + 1


def test_a_device_clock_that_was_never_set_is_replaced_by_the_arrival_time() -> None:
    clocks = _Clocks(T0.timestamp())
    gate = ClockGate(monotonic=clocks.mono, wall=clocks.wall)
    (out,) = gate.admit([_at(3600.0)])  # a Shelly before SNTP: 1970
    assert out.ts == T0
    assert gate.admit([_at(CLOCK_FLOOR.timestamp() + 1)])[0].ts.timestamp() == CLOCK_FLOOR.timestamp() + 1


def test_held_readings_are_bounded() -> None:
    clocks = _Clocks(0.0)
    gate = ClockGate(max_held=3, monotonic=clocks.mono, wall=clocks.wall)
    gate.admit([_at(float(i)) for i in range(5)])
    assert (gate.held, gate.dropped) == (3, 2)


def _never_synced() -> bool | None:
    return None  # the kernel cannot tell: the gate behaves as without it


def _energy(seconds: float, value: float) -> Reading:
    return _at(seconds, value, Quantity.ENERGY_IMPORT)


def test_a_clock_ahead_that_steps_back_keeps_every_reading_and_the_total(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 25: the clock is an hour ahead, then NTP steps it back; nothing after the step may be stale."""
    real = T0.timestamp()
    clocks = _Clocks(real + 3600)
    guard = TotalGuard()
    store = TotalsStore(tmp_path / "totals.json", guard, monotonic=clocks.mono, wall=clocks.wall)
    gate = ClockGate(monotonic=clocks.mono, wall=clocks.wall, synced=_never_synced)
    rules = ReadingRules(guard, store, gate)
    passed: list[Reading] = []
    for i in range(4):  # stamped by the clock that is ahead: they pass (nothing says it is wrong)
        passed += rules.apply([_at(clocks.wall_s, 100.0 + i), _energy(clocks.wall_s, 10.0 + i / 10)]).readings
        clocks.tick(30)
    in_flight = _energy(clocks.wall_s - 1, 10.4)  # stamped just before the step, handed on after it
    clocks.wall_s -= 3600  # NTP: the clock steps back to the right time
    caplog.clear()
    outcome = rules.apply([in_flight])
    assert outcome.clock_step_s == 3600
    assert [r.ts.timestamp() for r in outcome.readings] == [real + 120 - 1]  # moved back by the step
    passed += outcome.readings
    for i in range(5, 8):
        clocks.tick(30)
        outcome = rules.apply([_at(clocks.wall_s, 100.0 + i), _energy(clocks.wall_s, 10.0 + i / 10)])
        assert outcome.notes == []  # nothing stale
        passed += outcome.readings
    totals = [r.value for r in passed if r.quantity is Quantity.ENERGY_IMPORT]
    assert totals == pytest.approx([10.0, 10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 10.7])
    assert [r.value for r in passed if r.quantity is Quantity.POWER] == [
        100.0,
        101.0,
        102.0,
        103.0,
        105.0,
        106.0,
        107.0,
    ]
    assert guard.offset("m", Quantity.ENERGY_IMPORT) == 0.0  # no restart seen, nothing counted twice
    after = [r.ts.timestamp() for r in passed[-6:]]
    assert after == sorted(after)
    assert all(ts <= real + 240 for ts in after)  # right times, not an hour ahead
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "stepped back 3600 s" in warning.getMessage()
    assert gate.steps_back == 1
    # the state file no longer carries a time from the clock that was ahead (saved at once)
    assert json.loads((tmp_path / "totals.json").read_text())["saved_at"] == real + 120


def test_readings_are_moved_back_by_a_step_only_while_they_may_be_in_flight_across_it() -> None:
    """After the step, a reading stamped by the old clock may arrive for up to `step_tolerance_s`;
    later, a reading that happens to lie one step ahead is left as its source stamped it."""
    real = T0.timestamp()
    clocks = _Clocks(real + 600)
    gate = ClockGate(monotonic=clocks.mono, wall=clocks.wall, synced=_never_synced)
    rules = ReadingRules(clock=gate)
    rules.apply([_energy(clocks.wall_s, 1.0)])
    clocks.tick(30)
    clocks.wall_s -= 600
    assert rules.apply([_energy(clocks.wall_s, 1.1)]).clock_step_s == 600
    clocks.tick(10)  # within the tolerance: stamped by the clock as it was, moved back
    (moved,) = gate.admit([_energy(clocks.wall_s + 600 - 2, 1.2)])
    assert moved.ts.timestamp() == clocks.wall_s - 2
    clocks.tick(gate.step_tolerance_s)  # long after the step: left alone
    ahead = _energy(clocks.wall_s + 600 - 2, 1.3)
    assert gate.admit([ahead]) == [ahead]


def test_the_source_that_saw_the_step_counts_it() -> None:
    clocks = _Clocks(T0.timestamp() + 600)
    rules = ReadingRules(clock=ClockGate(monotonic=clocks.mono, wall=clocks.wall, synced=_never_synced))
    events: list[Event] = []
    ctx = SourceContext("plug", SourceStats("mqtt", 60.0), events.append, rules=rules)
    ctx.readings([_energy(clocks.wall_s, 1.0)])
    clocks.tick(30)
    clocks.wall_s -= 600
    ctx.readings([_energy(clocks.wall_s, 1.1)])
    assert ctx.stats.errors["clock_stepped_back"] == 1
    assert [r.value for r in events if isinstance(r, Reading)] == [1.0, 1.1]


def test_a_small_fall_of_the_clock_is_not_a_step() -> None:
    clocks = _Clocks(T0.timestamp())
    gate = ClockGate(monotonic=clocks.mono, wall=clocks.wall, synced=_never_synced)
    rules = ReadingRules(clock=gate)
    rules.apply([_energy(clocks.wall_s, 1.0)])
    clocks.tick(30)
    clocks.wall_s -= 2  # NTP slewing, jitter: the reading 2 s older than a later one is stale as ever
    out = rules.apply([_energy(clocks.wall_s - 30, 1.1), _energy(clocks.wall_s, 1.2)])
    assert (out.clock_step_s, gate.steps_back) == (0.0, 0)
    assert [v for _, v in out.notes] == [TotalVerdict.STALE]
    assert [r.value for r in out.readings] == [1.2]


def _ahead(seconds: float, value: float) -> Reading:
    return Reading.of("ahead", Quantity.ENERGY_IMPORT, value, datetime.fromtimestamp(seconds, UTC))


def test_rebase_moves_held_candidates_in_order_and_leaves_right_times_alone() -> None:
    guard = TotalGuard()
    now = T0.timestamp()
    guard.filter([_energy(now - 100, 50.0), _energy(now - 50, 50.1), _at(now - 10, 7.0)])  # right times
    guard.filter([_ahead(now + 3000, 80.0)])  # a meter last read by the clock that was ahead
    assert [v for _, v in guard.filter([_ahead(now + 3030, 0.1)]).notes] == [TotalVerdict.RESET_PENDING]
    assert guard.rebase(now, 3600) == 1
    assert guard.rebase(now, 3600) == 0  # nothing ahead any more
    got = guard.filter(
        [
            _ahead(now + 1, 0.3),
            _energy(now - 60, 50.05),  # older than a right time already applied: stale as ever
            _energy(now + 1, 50.2),
            _at(now + 1, 8.0),
        ]
    )
    assert [(r.meter_id, r.value) for r in got.readings] == [("ahead", 80.1), ("ahead", 80.3), ("m", 50.2), ("m", 8.0)]
    assert [v for _, v in got.notes] == [TotalVerdict.RESET, TotalVerdict.STALE]
    held, confirmed = got.readings[0], got.readings[1]
    assert (held.ts.timestamp(), confirmed.ts.timestamp()) == (now - 570, now + 1)  # moved back by the step


def test_a_floor_saved_by_a_clock_ahead_is_dropped_when_the_kernel_says_synchronized(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 25: the last run saved the totals state with its clock 3 days ahead; now the clock is right."""
    real = T0.timestamp()
    answers: list[bool | None] = [None, False, True]
    clocks = _Clocks(real)
    gate = ClockGate(floor_s=real + 3 * 86400, monotonic=clocks.mono, wall=clocks.wall, synced=lambda: answers[0])
    assert gate.admit([_at(clocks.wall_s, 1.0)]) == []  # the kernel cannot tell: held, as before
    answers.pop(0)
    clocks.tick(10)
    assert gate.admit([_at(clocks.wall_s, 2.0)]) == []  # the kernel says not synchronized: held
    answers.pop(0)
    clocks.tick(10)
    out = gate.admit([_at(clocks.wall_s, 3.0)])  # synchronized: the clock is right, the floor was not
    assert [(r.value, r.ts.timestamp()) for r in out] == [(1.0, real), (2.0, real + 10), (3.0, real + 20)]
    assert gate.floor_s == CLOCK_FLOOR.timestamp()
    clocks.tick(10)
    assert [r.value for r in gate.admit([_at(clocks.wall_s, 4.0)])] == [4.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "synchronized" in warnings[0]
    assert (gate.dropped, gate.held) == (0, 0)


def test_a_synchronized_kernel_never_lets_a_time_before_the_release_through() -> None:
    clocks = _Clocks(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
    gate = ClockGate(floor_s=T0.timestamp(), monotonic=clocks.mono, wall=clocks.wall, synced=lambda: True)
    assert gate.admit([_at(clocks.wall_s)]) == []
    assert gate.floor_s == T0.timestamp()


def test_the_floor_from_a_future_save_on_disk_goes_when_the_kernel_says_synchronized(tmp_path: Path) -> None:
    """The last run was killed with its clock a day ahead: its floor and its meter times are a day ahead."""
    real = T0.timestamp()
    path = tmp_path / "totals.json"
    meters = {"m": {"energy_import": {"raw": 4.9, "ts": real + 86000, "offset": 0.0}}}
    path.write_text(json.dumps({"version": 1, "saved_at": real + 86400, "meters": meters}))
    guard = TotalGuard()
    store = TotalsStore(path, guard)
    store.load()
    clocks = _Clocks(real)
    synced = ClockGate(floor_s=store.saved_at, monotonic=clocks.mono, wall=clocks.wall, synced=lambda: True)
    unknown = ClockGate(floor_s=store.saved_at, monotonic=clocks.mono, wall=clocks.wall, synced=_never_synced)
    rules = ReadingRules(guard, store, synced)
    assert [r.value for r in rules.apply([_energy(real, 5.0)]).readings] == [5.0]  # neither held nor stale
    clocks.tick(30)
    assert [r.value for r in rules.apply([_energy(clocks.wall_s, 5.1)]).readings] == [5.1]
    assert ReadingRules(TotalGuard(), store, unknown).apply([_energy(real, 5.0)]).readings == []


# -- the shared path -------------------------------------------------------------------------------


def test_every_source_shares_the_rule_and_counts_what_it_held() -> None:
    events: list[Event] = []
    rules = ReadingRules()
    one = SourceContext("one", SourceStats("shelly", 60.0), events.append, rules=rules)
    two = SourceContext("two", SourceStats("emu2", 60.0), events.append, rules=rules)
    one.readings([_r(10.0, 0), _r(10.5, 1)])
    one.readings([_r(10.4, 1)])  # the same frame again, a lower total: a late duplicate
    two.readings([_r(0.1, 2), _r(0.2, 3)])  # the same meter id through another source: one rule
    assert [r.value for r in events if isinstance(r, Reading)] == pytest.approx([10.0, 10.5, 10.6, 10.7])
    assert one.stats.errors["stale_reading"] == 0
    assert one.stats.errors["total_step_back"] == 1
    assert two.stats.errors["total_reset"] == 1
    assert two.stats.readings == 2


def test_historical_readings_skip_the_clock_check() -> None:
    events: list[Event] = []
    old = Reading.of("bill", Quantity.ENERGY_IMPORT, 5.0, datetime(2019, 1, 1, 1, tzinfo=UTC))
    SourceContext("utility", SourceStats("opower", 60.0), events.append, historical=True).readings([old])
    assert events == [old]


async def test_the_bridge_keeps_the_state_in_totals_path_across_a_restart(tmp_path: Path) -> None:
    from meterbridge.app import Bridge
    from meterbridge.config import BridgeConfig

    path = tmp_path / "data" / "totals.json"
    config = BridgeConfig.model_validate(
        {
            "mqtt": {"host": "127.0.0.1", "port": 9, "username": "u", "password": "p"},
            "health": {"enabled": False},
            "totals": {"path": str(path)},
            "sources": [{"type": "simulated", "id": "grid", "interval_s": 0.05}],
        }
    )
    async with Bridge(config) as bridge, asyncio.timeout(60):  # a hang bound
        while bridge.stats.sources["grid"].readings < 20:
            await asyncio.sleep(0.05)
        before = bridge.rules.guard.last("grid", Quantity.ENERGY_IMPORT)
    saved = json.loads(path.read_text())
    assert saved["meters"]["grid"]["energy_import"]["raw"] >= (before or 0) > 0
    # the next start continues from the file: the simulated counter starts again, so it is a restart
    async with Bridge(config) as bridge, asyncio.timeout(60):
        while bridge.stats.sources["grid"].errors["total_reset"] < 1:
            await asyncio.sleep(0.05)
        after = bridge.rules.guard.last("grid", Quantity.ENERGY_IMPORT)
    assert after is not None
    assert before is not None
    assert after > before
