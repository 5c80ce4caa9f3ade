"""A Pi 4 without a real-time clock: the bridge starts with its clock 400 days behind, then NTP answers.

The real `meter-bridge run` runs under libfaketime (Debian `faketime`), its wall clock read from
a file the test rewrites: first 400 days back (before the release's clock floor, as a Pi booting
on an old OS image time), then right (the step NTP makes). The monotonic clock is left alone, as
the kernel leaves it. A plug on `type: mqtt` (its readings stamped with the time they arrive,
i.e. by the wrong clock) publishes counted readings all along, into the real broker; the
database is VictoriaMetrics.

Every reading must reach the database, none in the wrong year, in the order they were sent,
and the ones sent before the clock was right must be stamped before the ones sent after.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.mosquitto import Mosquitto
from helpers.victoria import Victoria

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
BEFORE, AFTER = 12, 6


def _energies(victoria: Victoria) -> list[tuple[int, float]]:
    query = urllib.parse.urlencode({"match[]": 'mqtt_energy_import{meter="plug"}'})
    with urllib.request.urlopen(f"{victoria.url}/api/v1/export?{query}", timeout=30) as response:  # noqa: S310
        body = response.read().decode()
    points: list[tuple[int, float]] = []
    for line in body.splitlines():
        if line.strip():
            item = json.loads(line)
            points.extend(zip(item["timestamps"], item["values"], strict=True))
    return sorted(points)


@pytest.mark.slow
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="needs Debian's faketime (make setup installs it)")
def test_a_clock_that_starts_wrong_and_jumps_loses_nothing_and_misplaces_nothing(
    tmp_path: Path, own_broker: Mosquitto, victoria: Victoria
) -> None:
    clock = tmp_path / "faketime"
    clock.write_text("-400d\n")
    bridge = BridgeProcess(
        tmp_path / "bridge",
        "",
        env={
            "MQTT_PASSWORD": own_broker.password("bridge"),
            "INFLUX_TOKEN": "t0ken",
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(clock),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        },
    )
    config = (
        "site: {id: clock}\n"
        f"mqtt: {{host: 127.0.0.1, port: {own_broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}'}}\n"
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
    device.username_pw_set("observer", own_broker.password("observer"))
    device.connect(own_broker.host, own_broker.port)
    device.loop_start()
    real_start = datetime.now(UTC)
    sent: list[float] = []
    try:
        bridge.start(config)
        health = bridge.health() or {}
        assert health.get("uptime_s") is not None
        subscribed = False
        for n in range(BEFORE + AFTER):
            if n == BEFORE:
                clock.write_text("+0\n")  # NTP answers: the clock steps forward 400 days
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
            if n == BEFORE - 1:
                held = (bridge.health() or {})["sources"]["devices"]["readings"]
                assert held == 0, "readings stamped by a clock 400 days behind went out"
        deadline = time.monotonic() + 60
        points = _energies(victoria)
        while (not points or points[-1][1] != sent[-1]) and time.monotonic() < deadline:  # a hang bound
            time.sleep(0.5)
            points = _energies(victoria)
    finally:
        device.loop_stop()
        device.disconnect()
        bridge.stop()
    # the first reading may have been sent more than once (until the source had subscribed)
    assert [value for value, _ in itertools.groupby(value for _, value in points)] == sent
    stamps = [datetime.fromtimestamp(ms / 1000, UTC) for ms, _ in points]
    assert all(stamp.year == real_start.year for stamp in stamps), stamps
    assert all(stamp >= real_start.replace(microsecond=0) for stamp in stamps), (real_start, stamps[:3])
    assert stamps == sorted(stamps)
    assert shutil.which("faketime") is not None or LIBFAKETIME.exists()
