"""The household of `helpers.fidelity` in real time through the pinned Home Assistant (issue 25, item 2).

Home Assistant's recorder compiles long-term statistics at the clock's 5-minute boundaries from
the states it recorded, so this run cannot use a simulated clock: the devices' time is the real
time, frames every 10 s. The same ground truth (`Household`), devices (two Shelly devices on the
broker, an EMU-2 on a pseudo-terminal) and bridge process as the InfluxDB run, plus a real HA
(`HomeAssistant`, MQTT discovery on the same Mosquitto) in the site's zone (Europe/London).

Events, at fractions of the run: a Shelly reboot (its counter restarts), the EMU-2's meter
replaced (a counter far higher, later far lower), a glitch to 0, a broker restart with frames
sent again afterwards (QoS 1), a `kill -9` of the bridge, a restart of Home Assistant.

It then reads HA's 5-minute and hourly statistics (`recorder/statistics_during_period`, `sum`
and `state`) of each meter's `energy_import` sensor and checks them against the truth: every
row's `state` must be a total the meter really counted (the truth continued across restarts,
less the unknown energy of a replacement), no row's `sum` may fall or grow by more than the
meter could use, and the growth of `sum` over the window must equal the truth's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .bridgeproc import BridgeProcess
from .fidelity import (
    METERS,
    STEP_S,
    Counter,
    HaWatcher,
    Household,
    MeterSpec,
    ShellyPublisher,
    SimClockEmu2,
    bridge_config,
)
from .homeassistant import HomeAssistant
from .mosquitto import Mosquitto
from .victoria import Victoria

FIVE_MIN_S = 300


@dataclass(frozen=True)
class WindowEvent:
    """An event at `at` (a fraction of the run)."""

    at: float
    kind: str
    meter: str = ""
    counter_kwh: float = 0.0


WINDOW_EVENTS = (
    WindowEvent(0.12, "reboot", "plug"),
    WindowEvent(0.22, "replace", "grid", 48_000.0),
    WindowEvent(0.30, "glitch_zero", "house"),
    WindowEvent(0.40, "broker_restart"),
    WindowEvent(0.52, "kill9"),
    WindowEvent(0.64, "ha_restart"),
    WindowEvent(0.76, "reboot", "plug"),
    WindowEvent(0.86, "replace", "grid", 1_234.0),
)


@dataclass
class WindowResult:
    """What the run sent and what HA holds."""

    minutes: float
    #: per meter: (device time, continued total the bridge must publish (kWh), truth (0.1 Wh))
    frames: dict[str, list[tuple[int, float, int]]] = field(default_factory=dict)
    #: per meter: the unknown energy (0.1 Wh) of each replacement, with its time
    unknown: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    five_minute: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hourly: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ha_totals: dict[str, list[float]] = field(default_factory=dict)
    started: int = 0
    ended: int = 0


class WindowRun:
    """One real-time run of `minutes` under `workdir`."""

    def __init__(self, workdir: Path, minutes: float, log: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.minutes = minutes
        self.log = log
        self.broker = Mosquitto(workdir / "mosquitto")
        self.victoria = Victoria(workdir / "vm")
        self.emu2 = SimClockEmu2(workdir / "emu2", push_demand=False, demand_interval_s=1e9, summation_interval_s=1e9)
        self.ha = HomeAssistant(workdir / "ha", mqtt=self.broker, time_zone="Europe/London")
        self.bridge = BridgeProcess(
            workdir / "bridge", "", env={"MQTT_PASSWORD": self.broker.password("bridge"), "INFLUX_TOKEN": "t0ken"}
        )
        self.shelly = ShellyPublisher(self.broker)
        self.watch = HaWatcher(self.broker)
        self.home = Household(25)
        self.counters = {m.name: Counter() for m in METERS}
        #: What the bridge must publish: the counter continued (by the bridge's rule) per meter.
        self.offset = {m.name: 0 for m in METERS}
        self.last_counter = {m.name: 0 for m in METERS}
        self.result = WindowResult(minutes)
        self.bridge_up = self.broker_up = True

    def _config(self) -> str:
        return bridge_config(self.broker, self.victoria, self.emu2.port, self.workdir / "data")

    def _send(self, ts: int) -> None:
        for meter in METERS:
            counter = self.counters[meter.name].read(self.home.energy[meter.name])
            self._frame(meter, ts, counter)

    def _frame(self, meter: MeterSpec, ts: int, counter: int, record: bool = True) -> None:
        kwh = counter / 10_000
        power = self.home.power_w[meter.name]
        if meter.family == "emu2":
            if not self.bridge_up:
                return
            self.emu2.frame(ts, kwh, power)
        else:
            if not self.broker_up:
                return
            info = self.shelly.publish(meter, ts, power, kwh)
            if info is not None:
                info.wait_for_publish(30)
        if record:
            continued = (counter + self.offset[meter.name]) / 10_000
            self.result.frames.setdefault(meter.name, []).append((ts, continued, self.home.energy[meter.name]))
            self.last_counter[meter.name] = counter

    def _event(self, event: WindowEvent, ts: int) -> None:
        self.log(f"  window: {event.kind} {event.meter} at {datetime.fromtimestamp(ts, UTC):%H:%M:%S}")
        name = event.meter
        if event.kind == "reboot":
            self.offset[name] += self.last_counter[name]  # the bridge continues from the last counter
            self.counters[name] = Counter(0, self.home.energy[name])
        elif event.kind == "replace":
            new = round(event.counter_kwh * 10_000)
            truth_now = self.home.energy[name]
            self.counters[name] = Counter(new, truth_now)
            # the new meter's first frame is taken as the old total: what it counted until then is unknown
            self._pending_replace = (name, new, truth_now)
        elif event.kind == "glitch_zero":
            meter = next(m for m in METERS if m.name == name)
            self._frame(meter, ts + 5, 0, record=False)
        elif event.kind == "broker_restart":
            self.shelly.close()
            self.watch.stop()
            self.broker.stop()
            self.broker_up = False
            time.sleep(5)
            self.broker.start()
            self.broker_up = True
            self.watch.start()
            self.shelly.connect()
            for meter in METERS:  # frames sent again after the reconnect, older than the last
                if meter.family != "emu2":
                    for old_ts, continued, _truth in self.result.frames[meter.name][-4:]:
                        counter = round(continued * 10_000) - self.offset[meter.name]
                        self._frame(meter, old_ts, counter, record=False)
        elif event.kind == "kill9":
            self.bridge.kill9()
            self.bridge_up = False
            time.sleep(5)
            self.bridge.start(self._config())
            self.bridge_up = True
        elif event.kind == "ha_restart":
            self.ha.restart()

    def run(self) -> WindowResult:
        began = time.monotonic()
        self._pending_replace: tuple[str, int, int] | None = None
        self.broker.start()
        self.victoria.start()
        self.emu2.sim_now = int(time.time())
        self.emu2.meter.delivered_kwh = 0.0  # what it answers before the first frame: the counter the run starts at
        self.emu2.start()
        try:
            self.ha.start()
            self.watch.start()
            self.shelly.connect()
            self.bridge.start(self._config())
            self._loop()
            self.result.five_minute, self.result.hourly = asyncio.run(self._statistics())
        finally:
            self.result.ha_totals = dict(self.watch.totals)
            self.watch.stop()
            self.shelly.close()
            self.bridge.stop()
            self.ha.stop()
            self.emu2.stop()
            self.broker.stop()
            self.victoria.stop()
        self.result.minutes = (time.monotonic() - began) / 60
        # the raw result, to analyse again without another half hour of real time
        (self.workdir / "window-result.json").write_text(json.dumps(dataclasses.asdict(self.result)))
        return self.result

    def _loop(self) -> None:
        start = int(time.time()) // STEP_S * STEP_S + STEP_S
        end = start + int(self.minutes * 60)
        # end just after a 5-minute boundary, so the last period is compiled with everything
        end = (end // FIVE_MIN_S + 1) * FIVE_MIN_S + 20
        self.result.started, self.result.ended = start, end
        # HA's first compiled period is where its `sum` starts: events come after it
        first = (start // FIVE_MIN_S + 1) * FIVE_MIN_S + 15
        events = sorted(WINDOW_EVENTS, key=lambda e: e.at)
        ts = start
        while ts <= end:
            delay = ts - time.time()
            if delay > 0:
                time.sleep(delay)
            self.home.step(datetime.fromtimestamp(ts, UTC))
            if self._pending_replace is not None:
                name, new, truth_then = self._pending_replace
                self._pending_replace = None
                unknown = self.home.energy[name] - truth_then
                self.result.unknown.setdefault(name, []).append((ts, unknown))
                # the bridge continues the old total from the new meter's first frame
                self.offset[name] = self.offset[name] + self.last_counter[name] - (new + unknown)
            self._send(ts)
            while events and first + events[0].at * (end - FIVE_MIN_S - first) <= ts:
                self._event(events.pop(0), ts)
            ts += STEP_S
        # HA compiles the last 5-minute period about 10 s after its end
        compiled = (end // FIVE_MIN_S) * FIVE_MIN_S + 60
        while time.time() < compiled:
            time.sleep(1)

    async def _statistics(self) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
        five: dict[str, list[dict[str, Any]]] = {}
        hourly: dict[str, list[dict[str, Any]]] = {}
        ids = {m.name: f"sensor.hems_{m.meter_id}_energy_import" for m in METERS}

        async def fetch(period: str) -> dict[str, list[dict[str, Any]]]:
            async with self.ha.websocket() as ws:
                result = await ws.call(
                    "recorder/statistics_during_period",
                    start_time=datetime.fromtimestamp(self.result.started - 3600, UTC).isoformat(),
                    statistic_ids=list(ids.values()),
                    period=period,
                    types=["state", "sum"],
                )
            return {name: list(result.get(sid, [])) for name, sid in ids.items()}

        deadline = time.monotonic() + 180
        while True:  # the last period is compiled a little after its end: a hang bound, not a timing check
            five = await fetch("5minute")
            last_start = max((row["start"] for rows in five.values() for row in rows), default=0) / 1000
            if last_start >= (self.result.ended // FIVE_MIN_S) * FIVE_MIN_S - FIVE_MIN_S or time.monotonic() > deadline:
                break
            await asyncio.sleep(5)
        hourly = await fetch("hour")
        return five, hourly


@dataclass
class WindowReport:
    """One meter's statistics against the truth."""

    name: str
    rows: int = 0
    hourly_rows: int = 0
    negative: int = 0
    spikes: int = 0
    states_not_counted: list[float] = field(default_factory=list)
    sum_growth_kwh: float = 0.0
    truth_kwh: float = 0.0
    unknown_kwh: float = 0.0
    ha_decreases: int = 0
    #: hourly rows whose `sum` was compared with the 5-minute row that ends the same hour
    hours_checked: int = 0
    hours_differing: list[tuple[int, float, float]] = field(default_factory=list)
    bars: list[tuple[str, float, float]] = field(default_factory=list)


def analyse_window(result: WindowResult) -> dict[str, WindowReport]:
    """Per meter: 5-minute bars (sum growth) against the truth; states HA recorded that no meter counted."""
    reports = {}
    for meter in METERS:
        rep = WindowReport(meter.name)
        frames = result.frames.get(meter.name, [])
        counted = {round(continued, 4): (ts, truth) for ts, continued, truth in frames}
        rows = [row for row in result.five_minute.get(meter.name, []) if row.get("sum") is not None]
        rep.rows = len(rows)
        rep.hourly_rows = len(result.hourly.get(meter.name, []))
        limit_kwh = meter.rated_w / 1000 * FIVE_MIN_S / 3600
        for before, after in itertools.pairwise(rows):
            growth = after["sum"] - before["sum"]
            rep.negative += growth < -1e-9
            rep.spikes += growth > limit_kwh + 1e-6
            label = datetime.fromtimestamp(after["start"] / 1000, UTC).strftime("%H:%M")
            truth = None
            a, b = counted.get(round(before["state"], 4)), counted.get(round(after["state"], 4))
            if a is not None and b is not None:
                unknown = sum(u for ts, u in result.unknown.get(meter.name, []) if a[0] < ts <= b[0])
                truth = (b[1] - a[1] - unknown) / 10_000
            rep.bars.append((label, round(growth * 1000, 1), round(truth * 1000, 1) if truth is not None else -1.0))
        for row in rows:
            if round(row["state"], 4) not in counted:
                rep.states_not_counted.append(row["state"])
        if rows:
            rep.sum_growth_kwh = rows[-1]["sum"] - rows[0]["sum"]
            a, b = counted.get(round(rows[0]["state"], 4)), counted.get(round(rows[-1]["state"], 4))
            if a is not None and b is not None:
                rep.unknown_kwh = sum(u for ts, u in result.unknown.get(meter.name, []) if a[0] < ts <= b[0]) / 10_000
                rep.truth_kwh = (b[1] - a[1]) / 10_000
        by_start = {row["start"]: row for row in rows}
        for hour in result.hourly.get(meter.name, []):
            last_five = by_start.get(hour["start"] + 3600_000 - FIVE_MIN_S * 1000)
            if last_five is not None and hour.get("sum") is not None:
                rep.hours_checked += 1
                if abs(hour["sum"] - last_five["sum"]) > 1e-9:
                    rep.hours_differing.append((hour["start"], hour["sum"], last_five["sum"]))
        totals = result.ha_totals.get(meter.meter_id, [])
        rep.ha_decreases = sum(1 for x, y in itertools.pairwise(totals) if y < x - 1e-9)
        reports[meter.name] = rep
    return reports


def window_lines(result: WindowResult, reports: dict[str, WindowReport]) -> Iterator[str]:
    """The figures as Markdown."""
    yield (
        f"Run `window`: {result.minutes:.1f} minutes of real time "
        f"({datetime.fromtimestamp(result.started, UTC):%Y-%m-%d %H:%M:%S} to "
        f"{datetime.fromtimestamp(result.ended, UTC):%H:%M:%S} UTC), HA's statistics of each `energy_import` sensor."
    )
    yield ""
    yield (
        "| meter | 5-minute rows | hourly rows (= 5-minute sum) | sum growth kWh | truth kWh (less unknown) "
        "| negative bars | spike bars | states no meter counted | HA state decreases |"
    )
    yield "|---|---|---|---|---|---|---|---|---|"
    for rep in reports.values():
        yield (
            f"| {rep.name} | {rep.rows} | {rep.hourly_rows} ({rep.hours_checked - len(rep.hours_differing)} of "
            f"{rep.hours_checked}) | {rep.sum_growth_kwh:.4f} "
            f"| {rep.truth_kwh - rep.unknown_kwh:.4f} (unknown {rep.unknown_kwh:.4f}) | {rep.negative} | {rep.spikes} "
            f"| {len(rep.states_not_counted)} | {rep.ha_decreases} |"
        )
    yield ""
    for rep in reports.values():
        bars = ", ".join(f"{label} {growth}/{truth}" for label, growth, truth in rep.bars)
        yield f"- {rep.name}, 5-minute bars (HA Wh / truth Wh): {bars}"
