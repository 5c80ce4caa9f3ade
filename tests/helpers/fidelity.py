"""A household on a simulated clock, driven through the real bridge, broker and database (issue 25).

`run(scenario, workdir)` runs a scripted home: a ground truth of every meter's power at 10 s
steps (whole multiples of 36 W, so every step is a whole 0.1 Wh and nothing below is rounded),
the devices' frames every 30 s stamped with the devices' own (simulated) time, and the events
a home goes through, against:

- `meter-bridge run` as a child process with a YAML config (`BridgeProcess`), its spool and
  totals state in the run's folder (the data volume);
- a real Mosquitto with authentication (`Mosquitto`): two Shelly devices publish their
  `NotifyFullStatus` frames (with `ts`) on it, QoS 1;
- an EMU-2 on a pseudo-terminal (`Emu2Simulator`, its clock moved to the simulated one):
  `CurrentSummationDelivered` and `InstantaneousDemand` with `TimeStamp`;
- VictoriaMetrics as the InfluxDB v2 write peer, read back raw with `/api/v1/export`.

A month of device time passes in minutes because every timestamp the bridge keeps comes from
the devices. What cannot run on the simulated clock is the bridge's own: its spool and save
intervals, the HA sink's rate limit and the MQTT keep-alive run in real time (they are about
how long a process waits, not about when a reading happened), and a wrong wall clock of the
bridge is not part of this run (tests/unit/test_totals.py drives `ClockGate` with a clock
that starts in the past and jumps).

Pacing: frames are published in chunks and the run waits until the bridge's `/healthz` shows
it has handled the chunk (no broker queue ever overflows); before a `kill -9` it waits until
the last frame is in the database, then publishes a burst and kills at once, so what the kill
may cost is exactly that burst.

`analyse` compares hourly and whole-run energy in the database with the ground truth and
names every frame missing from the database with the event that explains it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import select
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho

from .bridgeproc import BridgeProcess
from .emu2_sim import EPOCH_2000, Emu2Simulator, fragment, hex32
from .mosquitto import Mosquitto
from .victoria import Victoria

STEP_S = 10  # ground truth resolution
FRAME_S = 30  # device frames
STEPS_PER_FRAME = FRAME_S // STEP_S
SITE_ZONE = ZoneInfo("Europe/London")
#: Energy of one step of 36 W, in units of 0.1 Wh (36 W x 10 s = 360 J = 0.1 Wh).
UNIT_W = 36
#: kWh per unit of the EMU-2's summation (Divisor 10000: 0.1 Wh).
EMU2_DIVISOR = 10_000


@dataclass(frozen=True)
class MeterSpec:
    """One meter of the household: how it is read and how big it is."""

    name: str
    family: str  # "shelly_switch", "shelly_em1", "emu2"
    meter_id: str  # the bridge's meter id
    measurement: str  # the InfluxDB measurement (the source family)
    rated_w: int
    base_w: int


METERS = (
    MeterSpec("plug", "shelly_switch", "sh_plug", "shelly", rated_w=3000, base_w=0),
    MeterSpec("house", "shelly_em1", "sh_house", "shelly", rated_w=9000, base_w=180),
    MeterSpec("grid", "emu2", "grid", "emu2", rated_w=14000, base_w=250),
)


@dataclass(frozen=True)
class Event:
    """Something that happens to the home at `at_s` seconds into the run."""

    at_s: int
    kind: str
    meter: str = ""
    #: How long it lasts (down times), seconds of device time.
    duration_s: int = 0
    #: A replaced meter's new counter (kWh).
    counter_kwh: float = 0.0


@dataclass(frozen=True)
class Scenario:
    """A run: where it starts, how long, the events."""

    name: str
    start: datetime
    days: float
    events: tuple[Event, ...]
    seed: int = 25
    #: Steps of 30 s published between two waits for the bridge.
    chunk_frames: int = 120


def _day(d: float) -> int:
    return round(d * 86400 / FRAME_S) * FRAME_S


def month() -> Scenario:
    """The long form: 30 days from 2026-10-20, across the end of summer time in Europe/London."""
    return Scenario(
        "month",
        datetime(2026, 10, 20, tzinfo=UTC),
        30,
        (
            Event(_day(2.3), "reboot", "plug"),
            Event(_day(4.1), "glitch_zero", "house"),
            Event(_day(4.6), "glitch_step_back", "house"),
            Event(_day(7.5), "broker_restart", duration_s=600),
            Event(_day(9.2), "kill9", duration_s=600),
            Event(_day(12.7), "replace", "grid", counter_kwh=48_000.0),
            Event(_day(15.0), "influx_down", duration_s=3 * 86400),
            Event(_day(20.4), "power_cut", duration_s=1800),
            Event(_day(23.3), "reboot", "plug"),
            Event(_day(23.3) + 3 * FRAME_S, "glitch_zero", "house"),
            Event(_day(26.0), "replace", "grid", counter_kwh=1_234.0),
            Event(_day(27.5), "glitch_spike", "plug"),
        ),
        chunk_frames=240,
    )


def short() -> Scenario:
    """The short form for `make test`: 36 hours across the same change of time, every event."""
    start = datetime(2026, 10, 24, 12, tzinfo=UTC)
    h = 3600
    return Scenario(
        "short",
        start,
        1.5,
        (
            Event(2 * h, "reboot", "plug"),
            Event(3 * h, "glitch_zero", "house"),
            Event(4 * h, "glitch_step_back", "house"),
            Event(5 * h, "broker_restart", duration_s=300),
            Event(7 * h, "kill9", duration_s=300),
            Event(9 * h, "replace", "grid", counter_kwh=48_000.0),
            Event(11 * h, "influx_down", duration_s=6 * h),
            Event(20 * h, "power_cut", duration_s=900),
            Event(24 * h, "replace", "grid", counter_kwh=1_234.0),
            Event(26 * h, "glitch_spike", "plug"),
            Event(28 * h, "reboot", "plug"),
        ),
    )


# -- the ground truth -------------------------------------------------------------------------------


class Household:
    """Every meter's power at each 10 s step (whole multiples of 36 W) and its running energy.

    `energy[m]` is the true energy so far in units of 0.1 Wh: an integer, so the truth is exact.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - a simulation, not crypto
        self.energy = {m.name: 0 for m in METERS}
        self.power_w = {m.name: m.base_w // UNIT_W * UNIT_W for m in METERS}
        self._load = {m.name: 0 for m in METERS}
        self._left = {m.name: 0 for m in METERS}

    def step(self, t: datetime) -> None:
        """Advance one 10 s step ending at... starting at `t` (power is constant within a step)."""
        hour = t.astimezone(SITE_ZONE).hour + t.minute / 60
        daily = 0.6 + 0.4 * math.sin((hour - 7) / 24 * 2 * math.pi) ** 2
        for meter in METERS:
            name = meter.name
            if self._left[name] <= 0:  # an appliance switches on or off
                on = self.rng.random() < 0.35 * daily
                self._load[name] = self.rng.randint(5, meter.rated_w // UNIT_W // 2) * UNIT_W if on else 0
                self._left[name] = self.rng.randint(3, 240)
            self._left[name] -= 1
            noise = self.rng.randint(0, 3) * UNIT_W
            power = min(meter.base_w // UNIT_W * UNIT_W + self._load[name] + noise, meter.rated_w // UNIT_W * UNIT_W)
            self.power_w[name] = power
            self.energy[name] += power // UNIT_W  # 36 W for 10 s = one unit of 0.1 Wh


# -- the devices --------------------------------------------------------------------------------------


@dataclass
class Counter:
    """A device's own energy counter (0.1 Wh units): the truth minus what it never counted."""

    base: int = 0  # what the device's counter read when it started counting the truth from `since`
    since: int = 0  # truth (0.1 Wh) at that moment

    def read(self, truth: int) -> int:
        return self.base + truth - self.since


@dataclass
class Frame:
    """One frame a device sent: its meter, device time, counter (kWh) and truth (0.1 Wh) then."""

    meter: str
    ts: int
    counter_kwh: float
    truth: int
    note: str = ""


class ShellyPublisher:
    """Publishes the two Shelly devices' frames on the broker (QoS 1), one connection."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.client: paho.Client | None = None

    def connect(self) -> None:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"fid-shelly-{time.monotonic_ns()}")
        client.username_pw_set("observer", self.broker.password("observer"))
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        client.loop_start()
        self.client = client

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.loop_stop()
                self.client.disconnect()
            self.client = None

    def publish(self, meter: MeterSpec, ts: int, power_w: int, counter_kwh: float) -> paho.MQTTMessageInfo | None:
        """A `NotifyFullStatus` of the device as a Plus 1PM (`switch:0`) or a Pro EM (`em1:0`)."""
        if self.client is None:
            return None
        wh = round(counter_kwh * 1000, 4)
        if meter.family == "shelly_switch":
            params: dict[str, Any] = {
                "ts": ts,
                "switch:0": {
                    "id": 0,
                    "output": True,
                    "apower": power_w,
                    "voltage": 230.0,
                    "current": round(power_w / 230, 3),
                    "aenergy": {"total": wh},
                },
            }
        else:
            params = {
                "ts": ts,
                "em1:0": {"id": 0, "act_power": power_w, "voltage": 230.0, "current": round(power_w / 230, 3)},
                "em1data:0": {"id": 0, "total_act_energy": wh, "total_act_ret_energy": 0.0},
            }
        frame = {"src": f"fid-{meter.name}", "dst": "fid/events", "method": "NotifyFullStatus", "params": params}
        return self.client.publish(f"fid/{meter.name}/events/rpc", json.dumps(frame), qos=1)


class SimClockEmu2(Emu2Simulator):
    """The EMU-2 simulator on the simulated clock: its replies carry that time; pushes come from `push`."""

    sim_now: int = 0

    def _ts(self) -> str:
        return hex32(self.sim_now - EPOCH_2000)

    def summation_fragment(self) -> bytes:
        return fragment(
            "CurrentSummationDelivered",
            [
                ("DeviceMacId", self.device_mac),
                ("MeterMacId", self.meter_mac),
                ("TimeStamp", self._ts()),
                ("SummationDelivered", f"0x{round(self.meter.delivered_kwh * EMU2_DIVISOR):016x}"),
                ("SummationReceived", "0x0000000000000000"),
                ("Multiplier", "0x00000001"),
                ("Divisor", f"0x{EMU2_DIVISOR:08x}"),
                ("DigitsRight", "0x04"),
                ("DigitsLeft", "0x0f"),
                ("SuppressLeadingZero", "Y"),
            ],
        )

    def _push(self, data: bytes, replies: list[bytes]) -> None:
        """No pushes on the simulator's own (real-time) schedule: the run pushes on the simulated one."""

    def frame(self, ts: int, kwh: float, power_w: float | None = None) -> None:
        """The device's frame at device time `ts`: its demand `power_w` (none: the total alone) and total `kwh`.

        Set under the lock, so a reply to one of the bridge's commands answers either the old
        state or the new one, then pushed (`push` takes the lock again)."""
        with self._lock:
            self.sim_now = ts
            self.meter.delivered_kwh = kwh
            if power_w is not None:
                self.meter.demand_w = power_w
        self.push((b"" if power_w is None else self.demand_fragment()) + self.summation_fragment())

    def push(self, data: bytes, timeout: float = 60.0) -> None:
        """Write all of `data`, waiting while the pty is full (the bridge reads at its own pace).

        The simulator's lock is held throughout, so a reply to one of the bridge's commands is
        never written into the middle of it (a real device finishes one fragment first)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            master = self._master
            while data and master is not None:
                try:
                    data = data[os.write(master, data) :]
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the bridge stopped reading the EMU-2") from None
                    select.select([], [master], [], 0.05)


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Outage:
    """A span of device time in which something was down, and what."""

    kind: str
    start: int
    end: int


@dataclass
class RunResult:
    """Everything `analyse` needs: the frames sent, outages, bursts before kills, the export."""

    scenario: Scenario
    frames: list[Frame] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    #: Frames published after the last one known stored, right before a kill -9: what it may cost.
    burst: set[tuple[str, int]] = field(default_factory=set)
    #: (meter, ts) of frames the devices sent wrong on purpose (glitches): must not be stored.
    glitches: set[tuple[str, int]] = field(default_factory=set)
    #: (meter, ts) of the first frame of a replaced meter: the energy since the old one's last is unknown.
    replaced: list[tuple[str, int, int]] = field(default_factory=list)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    #: Energy totals Home Assistant was sent, per meter, in order (from `hems/meter/<id>`).
    ha_totals: dict[str, list[float]] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    real_seconds: float = 0.0


def bridge_config(broker: Mosquitto, victoria: Victoria, emu2_port: str, data: Path) -> str:
    """The YAML the bridge runs with: as on the appliance, the spool and totals on the data volume."""
    return (
        "site: {id: fid}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}', "
        "base_topic: hems, client_id: fid-bridge}\n"
        "health: {port: {health_port}}\n"
        f"influx: {{url: '{victoria.url}', token: '${{INFLUX_TOKEN}}', replication_poll_s: 0}}\n"
        f"spool: {{path: '{data / 'spool' / 'influx.sqlite'}'}}\n"
        f"totals: {{path: '{data / 'totals.json'}'}}\n"
        "sources:\n"
        "  - type: shelly\n"
        "    id: sh\n"
        "    discover: false\n"
        "    reemit_s: 3600\n"
        "    devices:\n"
        "      - {prefix: fid/plug, id: plug, relays: false}\n"
        "      - {prefix: fid/house, id: house, relays: false}\n"
        f"  - {{type: emu2, id: grid, port: '{emu2_port}', period_interval_s: 0}}\n"
    )


class HaWatcher:
    """Records every energy total the HA sink publishes on `hems/meter/<id>` (what HA is shown)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.totals: dict[str, list[float]] = {}
        self.client: paho.Client | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"fid-watch-{time.monotonic_ns()}")
        client.username_pw_set("observer", self.broker.password("observer"))
        client.on_connect = lambda c, *_a: c.subscribe("hems/meter/+", qos=1)
        client.on_message = self._message
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        client.loop_start()
        self.client = client

    def _message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            state = json.loads(message.payload)
            if "energy_import" in state:
                with self._lock:
                    self.totals.setdefault(message.topic.rsplit("/", 1)[1], []).append(float(state["energy_import"]))

    def stop(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
            self.client = None


def _wait(check: Callable[[], bool], what: str, timeout: float = 300.0) -> None:
    """A hang bound, not a timing assertion: the run fails only if `what` never happens."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"fidelity run: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


def _export(victoria: Victoria, meter: MeterSpec, start_ms: int | None = None) -> list[tuple[int, float]]:
    params = {"match[]": f'{meter.measurement}_energy_import{{meter="{meter.meter_id}"}}'}
    if start_ms is not None:
        params["start"] = str(start_ms // 1000)
    url = f"{victoria.url}/api/v1/export?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback
        body = response.read().decode()
    points: dict[int, float] = {}
    for line in body.splitlines():
        if line.strip():
            item = json.loads(line)
            for ts, value in zip(item["timestamps"], item["values"], strict=True):
                points[int(ts)] = float(value)
    return sorted(points.items())


class Run:
    """One scenario against real processes under `workdir`."""

    def __init__(self, scenario: Scenario, workdir: Path, log: Callable[[str], None] = print) -> None:
        self.s = scenario
        self.workdir = workdir
        self.log = log
        self.broker = Mosquitto(workdir / "mosquitto")
        self.victoria = Victoria(workdir / "vm")
        self.emu2 = SimClockEmu2(workdir / "emu2", push_demand=False, demand_interval_s=1e9, summation_interval_s=1e9)
        self.data = workdir / "data"
        self.bridge: BridgeProcess | None = None
        self.shelly = ShellyPublisher(self.broker)
        self.watch = HaWatcher(self.broker)
        self.home = Household(scenario.seed)
        self.counters = {m.name: Counter() for m in METERS}
        self.result = RunResult(scenario)
        self.bridge_up = self.broker_up = self.influx_up = True
        self.down_until: dict[str, int] = {}
        self.last_sent: dict[str, int] = {}

    # -- processes ------------------------------------------------------------------------------

    def start_bridge(self) -> None:
        assert self.bridge is not None
        self.bridge.start(bridge_config(self.broker, self.victoria, self.emu2.port, self.data))
        self.bridge_up = True

    def _health(self) -> dict[str, Any]:
        assert self.bridge is not None
        return self.bridge.health() or {}

    def handled(self, upto: int) -> bool:
        """Whether the bridge has handled every source's frames up to device time `upto`."""
        health = self._health()
        now = time.time()
        for source in ("sh", "grid") if self.broker_up else ("grid",):
            age = health.get("sources", {}).get(source, {}).get("last_reading_age_s")
            if age is None or now - age < upto - 2:
                return False
        return True

    def stored(self, upto: int) -> bool:
        """Whether every meter's frames up to `upto` are in the database."""
        for meter in METERS:
            points = _export(self.victoria, meter, (upto - 3600) * 1000)
            if not points or points[-1][0] < upto * 1000:
                return False
        return True

    def drained(self) -> bool:
        """The bridge's InfluxDB sink has nothing in memory and nothing spooled."""
        sink = self._health().get("sinks", {}).get("influx", {})
        return bool(sink) and sink.get("queued") == 0 and sink.get("spool_readings", 1) == 0

    # -- the device side ----------------------------------------------------------------------------

    def send(self, ts: int, note: str = "") -> list[paho.MQTTMessageInfo]:
        """Every device sends a frame at device time `ts` (unless it cannot reach anyone)."""
        infos = []
        for meter in METERS:
            counter = self.counters[meter.name].read(self.home.energy[meter.name])
            kwh = counter / 10_000
            frame = Frame(meter.name, ts, kwh, self.home.energy[meter.name], note)
            power = self.home.power_w[meter.name]
            if meter.family == "emu2":
                if not self.bridge_up:
                    continue  # nobody reads the serial port: the device's pushes go nowhere
                self.emu2.frame(ts, kwh, power)
            else:
                if not self.broker_up:
                    continue  # the device cannot reach the broker
                info = self.shelly.publish(meter, ts, power, kwh)
                if info is not None:
                    infos.append(info)
            self.result.frames.append(frame)
            self.last_sent[meter.name] = ts
        return infos

    def send_raw(self, meter: MeterSpec, ts: int, counter_kwh: float, truth: int, note: str) -> None:
        """One frame of one device with a counter of our choosing (glitches, re-sent frames)."""
        power = self.home.power_w[meter.name]
        if meter.family == "emu2":
            self.emu2.frame(ts, counter_kwh)
        else:
            info = self.shelly.publish(meter, ts, power, counter_kwh)
            if info is not None:
                info.wait_for_publish(30)
        if note != "again":
            self.result.frames.append(Frame(meter.name, ts, counter_kwh, truth, note))

    # -- events ----------------------------------------------------------------------------------

    def event(self, event: Event, ts: int) -> None:
        self.log(f"  {self.s.name}: {event.kind} {event.meter} at +{event.at_s / 86400:.2f} d")
        meters = {m.name: m for m in METERS}
        if event.kind == "reboot":  # the counter restarts at 0, right after the frame at `ts`
            self.counters[event.meter] = Counter(0, self.home.energy[event.meter])
        elif event.kind == "replace":  # a new meter, its counter far from the old one's
            self.counters[event.meter] = Counter(round(event.counter_kwh * 10_000), self.home.energy[event.meter])
            self.result.replaced.append((event.meter, ts, self.home.energy[event.meter]))
        elif event.kind in ("glitch_zero", "glitch_step_back", "glitch_spike"):
            meter = meters[event.meter]
            counter = self.counters[meter.name].read(self.home.energy[meter.name]) / 10_000
            value = {"glitch_zero": 0.0, "glitch_step_back": counter - 0.0005, "glitch_spike": counter + 900.0}
            glitch_ts = ts + FRAME_S // 2
            self.send_raw(meter, glitch_ts, max(value[event.kind], 0.0), self.home.energy[meter.name], "glitch")
            self.result.glitches.add((meter.name, glitch_ts))
        elif event.kind == "broker_restart":
            self.broker_restart(event, ts)
        elif event.kind == "kill9":
            self.kill(event, ts, power_cut=False)
        elif event.kind == "power_cut":
            self.kill(event, ts, power_cut=True)
        elif event.kind == "influx_down":
            self.victoria.stop()
            self.influx_up = False
            self.down_until["influx"] = ts + event.duration_s
            self.result.outages.append(Outage("influx_down", ts, ts + event.duration_s))

    def broker_restart(self, event: Event, ts: int) -> None:
        _wait(lambda: self.handled(ts), "the bridge handling frames before the broker restart")
        self.shelly.close()
        self.watch.stop()
        self.broker.stop()
        self.broker_up = False
        self.down_until["broker"] = ts + event.duration_s
        self.result.outages.append(Outage("broker_down", ts + 1, ts + event.duration_s))

    def broker_back(self, ts: int) -> None:
        self.broker.start()
        self.broker_up = True
        self.watch.start()
        self.shelly.connect()
        # what QoS 1 does after a reconnect: frames sent before, delivered again, older than the last
        for frame in [f for f in self.result.frames if f.meter in ("plug", "house")][-6:]:
            meter = next(m for m in METERS if m.name == frame.meter)
            self.send_raw(meter, frame.ts, frame.counter_kwh, frame.truth, "again")
            self.send_raw(meter, frame.ts, frame.counter_kwh, frame.truth, "again")

    def _activity(self) -> dict[str, int]:
        sources = self._health().get("sources", {})
        return {
            name: int(source.get("readings", 0)) + sum(int(n) for n in source.get("errors", {}).values())
            for name, source in sources.items()
        }

    def await_sources(self) -> None:
        """Until each source shows it reads (subscribed, port open), send its last frame again.

        Those re-sent frames are older than or equal to what was applied: what the bridge does
        with them is what it must do with late and duplicated messages (drop them)."""
        wanted = {"grid"} | ({"sh"} if self.broker_up else set())
        before = self._activity()
        last = {m.name: max((f for f in self.result.frames if f.meter == m.name), key=lambda f: f.ts) for m in METERS}

        def reading() -> bool:
            now = self._activity()
            missing = [name for name in wanted if now.get(name, 0) <= before.get(name, 0)]
            for meter in METERS:
                if ("grid" if meter.family == "emu2" else "sh") in missing:
                    frame = last[meter.name]
                    self.send_raw(meter, frame.ts, frame.counter_kwh, frame.truth, "again")
            return not missing

        _wait(reading, "the sources reading again after a restart")

    def kill(self, event: Event, ts: int, power_cut: bool) -> None:
        assert self.bridge is not None
        _wait(lambda: self.handled(ts), "the bridge handling frames before the kill")
        if self.influx_up:
            _wait(lambda: self.stored(ts), "the frames before the kill reaching the database")
        # a burst the bridge may not have spooled yet when it dies: what a kill may cost
        for k in range(1, 4):
            burst_ts = ts + k * FRAME_S // 4
            for meter in METERS:
                if meter.family != "emu2":
                    counter = self.counters[meter.name].read(self.home.energy[meter.name]) / 10_000
                    self.send_raw(meter, burst_ts, counter, self.home.energy[meter.name], "burst")
                    self.result.burst.add((meter.name, burst_ts))
        self.bridge.kill9()
        self.bridge_up = False
        self.down_until["bridge"] = ts + event.duration_s
        self.result.outages.append(Outage("power_cut" if power_cut else "kill9", ts + 1, ts + event.duration_s))
        if power_cut:  # the whole Pi: the broker dies with it (the database: see `victoria_on_power_cut`)
            self.shelly.close()
            self.watch.stop()
            assert self.broker.process is not None
            self.broker.process.kill()
            self.broker.process.wait(10)
            self.broker.process = None
            self.broker_up = False
            self.down_until["broker"] = ts + event.duration_s
            if self.influx_up:
                self.victoria.stop()
                self.influx_up = False
                self.down_until["influx"] = ts + event.duration_s

    def back_up(self, ts: int) -> None:
        """Bring back what was down and is due at device time `ts`."""
        restarted = False
        if not self.broker_up and self.down_until.get("broker", 0) <= ts:
            self.broker_back(ts)
            restarted = True
        if not self.bridge_up and self.down_until.get("bridge", 0) <= ts:
            self.start_bridge()
            restarted = True
        if restarted and self.bridge_up:
            self.await_sources()
        if not self.influx_up and self.down_until.get("influx", 0) <= ts:
            self.victoria.start()
            self.influx_up = True

    # -- the whole run ---------------------------------------------------------------------------

    def run(self) -> RunResult:
        began = time.monotonic()
        self.broker.start()
        self.victoria.start()
        self.emu2.sim_now = int(self.s.start.timestamp())  # its first replies carry the simulated time
        self.emu2.meter.delivered_kwh = 0.0  # ... and the counter the run starts at
        self.emu2.start()
        self.watch.start()
        self.shelly.connect()
        self.bridge = BridgeProcess(
            self.workdir / "bridge",
            "",
            env={"MQTT_PASSWORD": self.broker.password("bridge"), "INFLUX_TOKEN": "t0ken"},
        )
        try:
            self.start_bridge()
            self._loop()
            self._finish()
            self.result.health = self._health()
        finally:
            self.result.ha_totals = dict(self.watch.totals)
            self.watch.stop()
            self.shelly.close()
            if self.bridge is not None:
                self.bridge.stop()
            self.emu2.stop()
            self.broker.stop()
            self.victoria.stop()
        self.result.real_seconds = time.monotonic() - began
        return self.result

    def _loop(self) -> None:
        start = int(self.s.start.timestamp())
        frames = int(self.s.days * 86400) // FRAME_S
        events = sorted(self.s.events, key=lambda e: e.at_s)
        pending: list[paho.MQTTMessageInfo] = []
        for n in range(frames + 1):
            ts = start + n * FRAME_S
            if n:
                for k in range(STEPS_PER_FRAME):
                    self.home.step(datetime.fromtimestamp(ts - FRAME_S + k * STEP_S, UTC))
            self.back_up(ts)
            pending.extend(self.send(ts))
            if n == 0:
                self.await_sources()
            while events and start + events[0].at_s <= ts:
                self.event(events.pop(0), ts)
            if n % self.s.chunk_frames == 0 or n == frames:
                for info in pending:
                    info.wait_for_publish(60)
                pending = []
                if self.bridge_up:
                    _wait(lambda ts=ts: self.handled(ts), f"the bridge handling frames up to {ts}")
        self.end_ts = start + frames * FRAME_S

    def _finish(self) -> None:
        if not self.bridge_up:
            self.start_bridge()
            self.await_sources()
        if not self.influx_up:
            self.victoria.start()
            self.influx_up = True
        if not self.broker_up:
            self.broker_back(self.end_ts)
        _wait(lambda: self.handled(self.end_ts), "the bridge handling the last frames")
        _wait(self.drained, "the spool draining into the database", timeout=900)
        _wait(lambda: self.stored(self.end_ts), "the last frames reaching the database")
        for meter in METERS:
            self.result.series[meter.name] = _export(self.victoria, meter)


# -- the analysis -------------------------------------------------------------------------------------


@dataclass
class MeterReport:
    """One meter's figures: energy in the database against the truth, hour by hour and in all."""

    name: str
    hours: int = 0
    exact_hours: int = 0
    shifted_hours: list[tuple[str, float, float, str]] = field(default_factory=list)
    negative_hours: int = 0
    spike_hours: int = 0
    truth_kwh: float = 0.0
    stored_kwh: float = 0.0
    unknown_kwh: float = 0.0  # the replaced meters' first intervals
    frames: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    unexplained_missing: list[int] = field(default_factory=list)
    stored_glitches: list[int] = field(default_factory=list)
    decreases: int = 0
    ha_decreases: int = 0
    local_days: list[tuple[str, int, float, float]] = field(default_factory=list)
    #: frames sent while InfluxDB was down, and how many of them are stored (spooled, replayed)
    influx_down_sent: int = 0
    influx_down_stored: int = 0

    @property
    def error_pct(self) -> float:
        return 0.0 if not self.truth_kwh else 100 * (self.stored_kwh - self.truth_kwh) / self.truth_kwh


def _value_at(points: list[tuple[int, float]], t_ms: int) -> float | None:
    """The stored total at `t_ms`: the last point at or before it (None before the first)."""
    lo, hi = 0, len(points)
    while lo < hi:
        mid = (lo + hi) // 2
        if points[mid][0] <= t_ms:
            lo = mid + 1
        else:
            hi = mid
    return points[lo - 1][1] if lo else None


def _cause(ts: int, result: RunResult, meter: str) -> str | None:
    if (meter, ts) in result.burst:
        return "burst before kill -9"
    for outage in result.outages:
        if outage.kind != "influx_down" and outage.start <= ts <= outage.end:
            return outage.kind
    return None


def analyse(result: RunResult) -> dict[str, MeterReport]:
    """Per meter: hourly and whole-run energy against the truth, what is missing and why."""
    reports: dict[str, MeterReport] = {}
    for meter in METERS:
        rep = MeterReport(meter.name)
        points = result.series.get(meter.name, [])
        frames = [f for f in result.frames if f.meter == meter.name and f.note != "glitch"]
        truth_at = {f.ts: f.truth for f in frames}
        stored_ts = {t for t, _ in points}
        rep.frames = len(frames)
        rep.decreases = sum(1 for (_, a), (_, b) in itertools.pairwise(points) if b < a - 1e-9)
        ha = result.ha_totals.get(meter.meter_id, [])
        rep.ha_decreases = sum(1 for a, b in itertools.pairwise(ha) if b < a - 1e-9)
        for frame in frames:
            if frame.ts * 1000 not in stored_ts:
                cause = _cause(frame.ts, result, meter.name)
                if cause is None:
                    rep.unexplained_missing.append(frame.ts)
                    cause = "unexplained"
                rep.missing[cause] = rep.missing.get(cause, 0) + 1
        for outage in result.outages:
            if outage.kind == "influx_down":
                during = [f for f in frames if outage.start <= f.ts <= outage.end]
                rep.influx_down_sent += len(during)
                rep.influx_down_stored += sum(1 for f in during if f.ts * 1000 in stored_ts)
        rep.stored_glitches = [ts for m, ts in result.glitches if m == meter.name and ts * 1000 in stored_ts]
        # the energy no one can know: from a replaced meter's last frame to the new one's first
        unknown = 0
        for name, ts, _truth in result.replaced:
            if name == meter.name:
                before = max(f.truth for f in frames if f.ts <= ts)
                after = min(f.truth for f in frames if f.ts > ts)
                unknown += after - before
        rep.unknown_kwh = unknown / 10_000
        first, last = frames[0], frames[-1]
        rep.truth_kwh = (last.truth - first.truth) / 10_000
        v0, v1 = _value_at(points, first.ts * 1000), _value_at(points, last.ts * 1000)
        rep.stored_kwh = (v1 or 0.0) - (v0 or 0.0)
        # hour by hour (UTC hours; local days below): the truth at the last frame at or before each boundary
        frame_ts = sorted(truth_at)
        hour0 = (first.ts // 3600 + 1) * 3600
        boundaries = list(range(hour0, last.ts + 1, 3600))
        rated_kwh = meter.rated_w / 1000
        for a, b in itertools.pairwise(boundaries):
            sa, sb = _value_at(points, a * 1000), _value_at(points, b * 1000)
            if sa is None or sb is None:
                continue
            stored = sb - sa
            truth = (truth_at[_last_le(frame_ts, b)] - truth_at[_last_le(frame_ts, a)]) / 10_000
            rep.hours += 1
            rep.negative_hours += stored < -1e-9
            rep.spike_hours += stored > rated_kwh + 1e-6
            if abs(stored - truth) <= 1e-6:
                rep.exact_hours += 1
            else:
                label = datetime.fromtimestamp(a, UTC).strftime("%m-%d %H:%M")
                rep.shifted_hours.append((label, round(stored * 1000, 1), round(truth * 1000, 1), _why(a, b, result)))
        # local days in the site's zone (the day summer time ends has 25 hours)
        day = datetime.fromtimestamp(first.ts, SITE_ZONE).date() + timedelta(days=1)
        while True:
            a_dt = datetime.combine(day, datetime.min.time(), SITE_ZONE)
            b_dt = datetime.combine(day + timedelta(days=1), datetime.min.time(), SITE_ZONE)
            a, b = int(a_dt.timestamp()), int(b_dt.timestamp())
            if b > last.ts:
                break
            sa, sb = _value_at(points, a * 1000), _value_at(points, b * 1000)
            truth = (truth_at[_last_le(frame_ts, b)] - truth_at[_last_le(frame_ts, a)]) / 10_000
            rep.local_days.append((day.isoformat(), (b - a) // 3600, round((sb or 0) - (sa or 0), 4), round(truth, 4)))
            day += timedelta(days=1)
        reports[meter.name] = rep
    return reports


def _last_le(sorted_ts: list[int], t: int) -> int:
    lo, hi = 0, len(sorted_ts)
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_ts[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return sorted_ts[max(lo - 1, 0)]


def _why(a: int, b: int, result: RunResult) -> str:
    for outage in result.outages:
        if outage.start - FRAME_S <= b and outage.end + FRAME_S >= a and outage.kind != "influx_down":
            return f"{outage.kind}: frames at the hour's edge never reached the bridge, energy moved to the next hour"
    for name, ts, _ in result.replaced:
        if a <= ts < b:
            return f"{name} replaced: the energy between the old meter's last frame and the new one's first is unknown"
    for _name, ts in result.burst:
        if a - FRAME_S <= ts <= b + FRAME_S:
            return "kill -9: frames sent right before it were lost"
    return "unexplained"


def report_lines(result: RunResult, reports: dict[str, MeterReport]) -> Iterator[str]:
    """The figures as Markdown (what docs/fidelity.md shows)."""
    s = result.scenario
    end = s.start + timedelta(days=s.days)
    yield (
        f"Run `{s.name}`: {s.days:g} days of device time ({s.start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC), "
        f"{len(result.frames)} frames, {result.real_seconds / 60:.1f} minutes of real time."
    )
    yield ""
    yield (
        "| meter | truth kWh | InfluxDB kWh | difference | unknown (replaced) kWh | hours | exact hours "
        "| negative hours | spike hours | decreasing points | HA decreases | frames missing (cause) "
        "| sent while InfluxDB was down: stored |"
    )
    yield "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for rep in reports.values():
        missing = ", ".join(f"{n} {k}" for k, n in sorted(rep.missing.items())) or "none"
        diff_wh = (rep.stored_kwh - rep.truth_kwh) * 1000
        yield (
            f"| {rep.name} | {rep.truth_kwh:.4f} | {rep.stored_kwh:.4f} | {diff_wh:+.1f} Wh ({rep.error_pct:+.4f} %) "
            f"| {rep.unknown_kwh:.4f} | {rep.hours} | {rep.exact_hours} | {rep.negative_hours} | {rep.spike_hours} "
            f"| {rep.decreases} | {rep.ha_decreases} | {missing} | {rep.influx_down_stored} of {rep.influx_down_sent} |"
        )
    yield ""
    yield "Events (device time):"
    yield ""
    for event in sorted(s.events, key=lambda e: e.at_s):
        at = s.start + timedelta(seconds=event.at_s)
        what = {
            "reboot": "Shelly reboot: its counter restarts at 0",
            "replace": f"meter replaced: the new counter reads {event.counter_kwh:,.0f} kWh",
            "glitch_zero": "one frame reports a total of 0",
            "glitch_step_back": "one frame reports a total 0.5 Wh lower",
            "glitch_spike": "one frame reports a total 900 kWh higher",
            "broker_restart": "Mosquitto restarts; then the last frames are sent again, twice (QoS 1)",
            "kill9": "`kill -9` of the bridge",
            "power_cut": "power cut: bridge and broker killed (-9), database stopped",
            "influx_down": "InfluxDB (VictoriaMetrics) down",
        }[event.kind]
        down = f", {event.duration_s / 3600:g} h down" if event.duration_s else ""
        yield f"- {at:%Y-%m-%d %H:%M} UTC {event.meter or 'all'}: {what}{down}"
    yield ""
    for rep in reports.values():
        for label, stored, truth, why in rep.shifted_hours:
            yield f"- {rep.name}, hour from {label} UTC: InfluxDB {stored} Wh, truth {truth} Wh: {why}"
    yield ""
    for rep in reports.values():
        for day, hours, stored, truth in rep.local_days:
            if hours != 24:
                yield (
                    f"- {rep.name}, {day} in {SITE_ZONE.key} ({hours} hours): InfluxDB {stored} kWh, truth {truth} kWh"
                )
