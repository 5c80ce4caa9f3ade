"""A wrong wall clock that NTP then steps to the right time: behind (a Pi 4 without a real-time
clock), or ahead.

The real `meter-bridge run` runs under libfaketime (Debian `faketime`), its wall clock read from
a file the test rewrites: first wrong, then right (the step NTP makes). The monotonic clock is
left alone, as the kernel leaves it. A plug on `type: mqtt` (its readings stamped with the time
they arrive, i.e. by the wrong clock) publishes counted readings all along, into the real
broker; the database is VictoriaMetrics.

400 days behind (before the release's clock floor, as a Pi booting on an old OS image time):
every reading must reach the database, none in the wrong year, in the order they were sent, and
the ones sent before the clock was right must be stamped before the ones sent after.

3 hours ahead: nothing tells the bridge that clock is wrong, so the readings before the step go
out 3 hours ahead (they cannot be recalled); every reading after the step must reach the
database too, at its right time (none dropped as older than the ones stamped ahead).
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.mosquitto import Mosquitto
from helpers.victoria import Victoria

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
BEFORE, AFTER = 12, 6
AHEAD_BEFORE, AHEAD_AFTER = 4, 4


def _energies(victoria: Victoria) -> list[tuple[int, float]]:
    # `end` far ahead: the export stops at the present by default, and a clock ahead stamped some in the future
    end = int(time.time()) + 2 * 86400
    query = urllib.parse.urlencode({"match[]": 'mqtt_energy_import{meter="plug"}', "end": end})
    with urllib.request.urlopen(f"{victoria.url}/api/v1/export?{query}", timeout=30) as response:  # noqa: S310
        body = response.read().decode()
    points: list[tuple[int, float]] = []
    for line in body.splitlines():
        if line.strip():
            item = json.loads(line)
            points.extend(zip(item["timestamps"], item["values"], strict=True))
    return sorted(points)


@dataclass
class _Run:
    sent: list[float]
    points: list[tuple[int, float]]
    #: Real (test clock) times: start, just before the step, after the last reading.
    start: datetime
    step: datetime
    end: datetime
    health: dict[str, Any]


def _run(tmp_path: Path, broker: Mosquitto, victoria: Victoria, wrong: str, before: int, after: int) -> _Run:
    """The bridge under a clock `wrong` (libfaketime's offset) for `before` readings, then right for `after`."""
    clock = tmp_path / "faketime"
    clock.write_text(f"{wrong}\n")
    bridge = BridgeProcess(
        tmp_path / "bridge",
        "",
        env={
            "MQTT_PASSWORD": broker.password("bridge"),
            "INFLUX_TOKEN": "t0ken",
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(clock),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        },
    )
    config = (
        "site: {id: clock}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}'}}\n"
        "health: {port: {health_port}}\n"
        f"influx: {{url: '{victoria.url}', token: '${{INFLUX_TOKEN}}', replication_poll_s: 0}}\n"
        f"spool: {{path: '{tmp_path / 'data' / 'spool.sqlite'}'}}\n"
        f"totals: {{path: '{tmp_path / 'data' / 'totals.json'}'}}\n"
        "sources:\n"
        "  - type: mqtt\n"
        "    id: devices\n"
        "    meters:\n"
        "      - id: plug\n"
        "        state_topic: plug/state\n"
        "        values: [{quantity: power, key: p}, {quantity: energy_import, key: e}]\n"
    )
    device = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="clock-plug")
    device.username_pw_set("observer", broker.password("observer"))
    device.connect(broker.host, broker.port)
    device.loop_start()
    start = step = datetime.now(UTC)
    sent: list[float] = []
    try:
        bridge.start(config)
        health = bridge.health() or {}
        assert health.get("uptime_s") is not None
        subscribed = False
        for n in range(before + after):
            if n == before:
                step = datetime.now(UTC)
                clock.write_text("+0\n")  # NTP answers: the clock steps to the right time
            energy = round(1.0 + n * 0.01, 2)
            device.publish("plug/state", json.dumps({"p": 100 + n, "e": energy}), qos=1).wait_for_publish(10)
            sent.append(energy)
            time.sleep(0.3)
            if not subscribed:  # the first reading may come before the source subscribed: send it again
                deadline = time.monotonic() + 30
                while (bridge.health() or {}).get("sources", {}).get("devices", {}).get("meters") != {"plug": True}:
                    device.publish("plug/state", json.dumps({"p": 100, "e": energy}), qos=1).wait_for_publish(10)
                    time.sleep(0.3)
                    assert time.monotonic() < deadline, "the source never read the plug"
                subscribed = True
            if n == before - 1 and wrong.startswith("-"):
                held = (bridge.health() or {})["sources"]["devices"]["readings"]
                assert held == 0, f"readings stamped by a clock {wrong} off went out"
        deadline = time.monotonic() + 60
        points = _energies(victoria)
        while (not points or sent[-1] not in [v for _, v in points]) and time.monotonic() < deadline:  # a hang bound
            time.sleep(0.5)
            points = _energies(victoria)
        health = bridge.health() or {}
    finally:
        device.loop_stop()
        device.disconnect()
        bridge.stop()
    return _Run(sent, points, start, step, datetime.now(UTC), health)


@pytest.mark.slow
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs Debian's faketime (make setup installs it)")
def test_a_clock_that_starts_wrong_and_jumps_loses_nothing_and_misplaces_nothing(
    tmp_path: Path, own_broker: Mosquitto, victoria: Victoria
) -> None:
    run = _run(tmp_path, own_broker, victoria, "-400d", BEFORE, AFTER)
    points = run.points
    # the first reading may have been sent more than once (until the source had subscribed)
    assert [value for value, _ in itertools.groupby(value for _, value in points)] == run.sent
    stamps = [datetime.fromtimestamp(ms / 1000, UTC) for ms, _ in points]
    # within the run (not 400 days back; by the year it was, a run across New Year failed)
    assert all(run.start.replace(microsecond=0) <= stamp <= run.end for stamp in stamps), (run.start, run.end, stamps)
    assert stamps == sorted(stamps)
    assert shutil.which("faketime") is not None or LIBFAKETIME.exists()


@pytest.mark.slow
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs Debian's faketime (make setup installs it)")
def test_a_clock_ahead_that_steps_back_loses_nothing_after_the_step(
    tmp_path: Path, own_broker: Mosquitto, victoria: Victoria
) -> None:
    """Issue 25: before, every reading after the step was dropped as older until real time caught up."""
    run = _run(tmp_path, own_broker, victoria, "+3h", AHEAD_BEFORE, AHEAD_AFTER)
    by_value = {value: datetime.fromtimestamp(ms / 1000, UTC) for ms, value in run.points}
    assert sorted(by_value) == run.sent  # every reading reached the database, the step lost none
    ahead = timedelta(hours=3)
    for value in run.sent[:AHEAD_BEFORE]:  # sent with the clock ahead: they went out so (cannot be recalled)
        assert run.start + ahead - timedelta(minutes=1) <= by_value[value] <= run.step + ahead, (value, by_value)
    for value in run.sent[AHEAD_BEFORE:]:  # after the step: at their right time
        assert run.step - timedelta(seconds=1) <= by_value[value] <= run.end, (value, by_value)
    assert run.health["sources"]["devices"]["errors"].get("clock_stepped_back") == 1
    assert not run.health["sources"]["devices"]["errors"].get("stale_reading")
