"""Chaos: Mosquitto restarted again and again while 10 simulated meters publish through a real
`meter-bridge run` process. Nothing may be lost on the InfluxDB path (VictoriaMetrics), and Home
Assistant's discovery and availability must come back after every restart (asserted on a subscriber:
the test broker has no persistence, so every retained message is gone after a restart and has to be
published again by the bridge)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.chaos import landed, settled_export, simulated_sources, wait_export
from helpers.figures import record as record_figure
from helpers.figures import scale
from helpers.mosquitto import Mosquitto
from helpers.mqtt import recording
from helpers.victoria import Victoria

METERS = 10
INTERVAL_S = 1.0
SPEED = 5.0
RESTARTS = scale(3, 10)
OUTAGE_S = scale(0.5, 3.0)


def config(broker: Mosquitto, victoria: Victoria, tmp_path: Path) -> str:
    return (
        "site: {id: home}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}', "
        "base_topic: chaos, keepalive_s: 5}\n"
        "homeassistant: {discovery_prefix: chaosha}\n"
        "health: {port: {health_port}}\n"
        f"influx: {{url: '{victoria.url}', token: '${{INFLUX_TOKEN}}', replication_poll_s: 0, flush_interval_s: 0.2}}\n"
        f"spool: {{path: '{tmp_path / 'spool.sqlite'}'}}\n"
        "sources:\n" + simulated_sources(METERS, INTERVAL_S, SPEED)
    )


def restored(rec: object) -> bool:
    last = rec.last  # type: ignore[attr-defined]
    return last.get("chaos/bridge/availability") == b"online" and all(
        f"chaosha/sensor/hems/hems_m{i:02d}_power/config" in last
        and last.get(f"chaos/meter/m{i:02d}/availability") == b"online"
        and f"chaos/meter/m{i:02d}" in last
        for i in range(METERS)
    )


@pytest.mark.slow
async def test_mosquitto_restarts_lose_nothing_and_discovery_returns(
    tmp_path: Path, own_broker: Mosquitto, victoria: Victoria, request: pytest.FixtureRequest
) -> None:
    bridge = BridgeProcess(
        tmp_path / "bridge",
        config(own_broker, victoria, tmp_path),
        env={"MQTT_PASSWORD": own_broker.password("bridge"), "INFLUX_TOKEN": "t0ken"},
    )
    bridge.start()
    restore_s: list[float] = []
    try:
        async with recording(own_broker, "chaos/#", "chaosha/#") as rec:
            await rec.wait_for(restored, timeout=30)
        for _ in range(RESTARTS):
            own_broker.stop()
            time.sleep(OUTAGE_S)
            own_broker.start()
            began = time.monotonic()
            # a fresh subscriber: it only sees what the bridge publishes (again) after the restart
            async with recording(own_broker, "chaos/#", "chaosha/#") as rec:
                await rec.wait_for(restored, timeout=60)
            restore_s.append(time.monotonic() - began)
        time.sleep(2.0)
        health = bridge.health()
        assert health is not None
        emitted_by_source = {sid: s["readings"] for sid, s in health["sources"].items()}
        wait_export(victoria, '{__name__=~"simulated_.*"}', lambda s: len(s) >= METERS * 5, 30)
    finally:
        bridge.stop()
    # counted once the bridge has stopped and VictoriaMetrics shows all it took: an export while
    # the bridge writes may hold only part of the newest step (counted as lost)
    series = settled_export(victoria, '{__name__=~"simulated_.*"}')
    per_meter = landed(series, INTERVAL_S)
    assert sorted(per_meter) == [f"m{i:02d}" for i in range(METERS)]
    lost = sum(item.missing() for item in per_meter.values())
    stored = sum(len(steps) for item in per_meter.values() for steps in item.steps.values())
    conflicting = sum(item.conflicting_duplicates for item in per_meter.values())
    steps_min = min(item.last_step for item in per_meter.values())
    ok = lost == 0 and conflicting == 0 and len(restore_s) == RESTARTS
    record_figure(
        "chaos_mosquitto",
        area="Chaos",
        check=f"Mosquitto restarted {RESTARTS} times while {METERS} simulated meters publish",
        goal="0 readings lost in InfluxDB; HA discovery + availability restored after every restart",
        measured=(
            f"{lost} lost of {stored} stored ({sum(emitted_by_source.values())} emitted by the sources); "
            f"discovery + availability restored {len(restore_s)}/{RESTARTS} times, "
            f"in {min(restore_s):.1f}-{max(restore_s):.1f} s after the broker came back"
        ),
        ok=ok,
        test=request.node.nodeid,
    )
    assert steps_min > 10
    assert conflicting == 0
    assert lost == 0
