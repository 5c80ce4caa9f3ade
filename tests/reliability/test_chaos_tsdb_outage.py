"""Chaos: the time-series database down for an hour of simulated time (fast simulated meters
compress it), with a real `meter-bridge run` process and a real VictoriaMetrics. Every reading
must arrive after the outage; we report the spool's peak size and how long the replay took."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.chaos import GRID_QUANTITIES, landed, settled_export, simulated_sources, wait_export
from helpers.figures import record as record_figure
from helpers.figures import scale
from helpers.mosquitto import Mosquitto
from helpers.victoria import Victoria

METERS = 3
INTERVAL_S = 1.0
SPEED = 100.0
OUTAGE_SIM_S = scale(300, 3600)


@pytest.mark.slow
async def test_tsdb_down_for_an_hour_of_simulated_time(
    tmp_path: Path, broker: Mosquitto, victoria: Victoria, base_topic: str, request: pytest.FixtureRequest
) -> None:
    config = (
        "site: {id: home}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}', "
        f"base_topic: {base_topic}}}\n"
        f"homeassistant: {{discovery_prefix: {base_topic}/ha}}\n"
        "health: {port: {health_port}}\n"
        f"influx: {{url: '{victoria.url}', token: '${{INFLUX_TOKEN}}', replication_poll_s: 0, flush_interval_s: 0.2, "
        "max_retry_delay_s: 2}\n"
        f"spool: {{path: '{tmp_path / 'spool.sqlite'}'}}\n"
        "sources:\n" + simulated_sources(METERS, INTERVAL_S, SPEED)
    )
    bridge = BridgeProcess(
        tmp_path / "bridge", config, env={"MQTT_PASSWORD": broker.password("bridge"), "INFLUX_TOKEN": "t0ken"}
    )
    bridge.start()
    peak_bytes = 0.0
    try:
        time.sleep(2)
        victoria.stop()
        down_at = time.monotonic()
        while time.monotonic() - down_at < OUTAGE_SIM_S / SPEED:
            time.sleep(0.25)
            health = bridge.health()
            assert health is not None, "the bridge stays up while InfluxDB is down"
            peak_bytes = max(peak_bytes, health["sinks"]["influx"].get("spool_bytes", 0))
        victoria.start()
        back_at = time.monotonic()
        replay_s = None
        while time.monotonic() - back_at < 120:
            health = bridge.health()
            assert health is not None
            influx = health["sinks"]["influx"]
            peak_bytes = max(peak_bytes, influx.get("spool_bytes", 0))
            if influx.get("spool_readings", 1) == 0 and influx["connected"]:
                replay_s = time.monotonic() - back_at
                break
            time.sleep(0.1)
        assert replay_s is not None, "the spool drained after InfluxDB came back"
        dropped = health["sinks"]["influx"]["spool_dropped_readings"]
        min_steps = (time.monotonic() - down_at) * SPEED / INTERVAL_S * 0.9
        series = wait_export(
            victoria,
            '{__name__=~"simulated_.*"}',
            lambda s: (
                len(s) == METERS * len(GRID_QUANTITIES)
                and all(item.last_step >= min_steps for item in landed(s, INTERVAL_S).values())
            ),
            60,
        )
    finally:
        bridge.stop()
    # counted once the bridge has stopped and VictoriaMetrics shows all it took (an export while
    # the bridge writes may hold only part of the newest step, counted as lost)
    assert len(series) == METERS * len(GRID_QUANTITIES), "every series landed"
    series = settled_export(victoria, '{__name__=~"simulated_.*"}')
    per_meter = landed(series, INTERVAL_S)
    lost = sum(item.missing() for item in per_meter.values())
    stored = sum(len(steps) for item in per_meter.values() for steps in item.steps.values())
    record_figure(
        "chaos_tsdb_outage",
        area="Chaos",
        check=f"InfluxDB (VictoriaMetrics) down for {OUTAGE_SIM_S / 60:.0f} min of simulated time, "
        f"{METERS} meters at {INTERVAL_S:.0f} s",
        goal="0 readings lost; spool peak and replay time reported",
        measured=(
            f"{lost} lost of {stored} stored; spool peak {peak_bytes / 1024:.0f} KiB (compressed); "
            f"replay {replay_s:.1f} s after InfluxDB came back; {dropped} dropped by the spool bound"
        ),
        ok=lost == 0 and dropped == 0,
        test=request.node.nodeid,
    )
    assert len(per_meter) == METERS
    assert dropped == 0
    assert lost == 0
    assert peak_bytes > 0, "the outage went through the spool"
