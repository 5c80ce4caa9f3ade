"""Chaos: the spool's volume fills up (a 2 MiB tmpfs mounted for the test, filled with a file)
while InfluxDB is down, so the InfluxDB sink must spool and cannot. The bridge must keep
publishing to Home Assistant, report the condition (/healthz and /metrics count spool errors),
and recover when space returns: the spool drains and the readings reach InfluxDB.

Needs `mount -t tmpfs` (root with CAP_SYS_ADMIN); skipped with the reason where that is refused."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.chaos import landed, settled_export, simulated_sources, wait_export
from helpers.figures import record as record_figure
from helpers.mosquitto import Mosquitto
from helpers.mqtt import recording
from helpers.victoria import Victoria

INTERVAL_S = 0.1


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs at tmp_path/spoolfs (unmounted afterwards)."""
    mountpoint = tmp_path / "spoolfs"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): disk-full chaos needs a small volume")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(volume: Path) -> Path:
    """Fill `volume` with one file until the filesystem says ENOSPC."""
    filler = volume / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    code = 0
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        code = err.errno or 0
    finally:
        os.close(fd)
    if code != errno.ENOSPC:
        raise AssertionError(f"filling {volume} ended with errno {code}, not ENOSPC")
    return filler


def spool_errors(bridge: BridgeProcess) -> int:
    health = bridge.health()
    assert health is not None, "the bridge answers /healthz while the disk is full"
    return int(health["sinks"]["influx"]["errors"].get("spool", 0))


@pytest.mark.slow
async def test_disk_full_keeps_ha_reports_and_recovers(
    tmp_path: Path,
    small_volume: Path,
    broker: Mosquitto,
    victoria: Victoria,
    base_topic: str,
    request: pytest.FixtureRequest,
) -> None:
    victoria.stop()  # InfluxDB down: everything has to go through the spool
    config = (
        "site: {id: home}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}', "
        f"base_topic: {base_topic}}}\n"
        f"homeassistant: {{discovery_prefix: {base_topic}/ha, min_interval_s: 0}}\n"
        "health: {port: {health_port}}\n"
        f"influx: {{url: '{victoria.url}', token: '${{INFLUX_TOKEN}}', replication_poll_s: 0, max_retry_delay_s: 2}}\n"
        f"spool: {{path: '{small_volume / 'spool.sqlite'}'}}\n"
        "sources:\n" + simulated_sources(2, INTERVAL_S, 1.0)
    )
    bridge = BridgeProcess(
        tmp_path / "bridge", config, env={"MQTT_PASSWORD": broker.password("bridge"), "INFLUX_TOKEN": "t0ken"}
    )
    state = f"{base_topic}/meter/m00"
    bridge.start()
    filler: Path | None = None
    try:
        time.sleep(3)  # some readings spooled normally
        filler = fill(small_volume)
        full_at = time.monotonic()
        while spool_errors(bridge) == 0 and time.monotonic() - full_at < 60:  # a hang bound
            time.sleep(0.2)
        errors_reported = spool_errors(bridge)
        metrics = bridge.metrics()
        async with recording(broker, state) as rec:
            # the retained state first, then fresh ones: HA keeps getting data
            await rec.wait_for(lambda r: len(r.messages) >= 5, timeout=60)
            ha_states = len(rec.messages)
        time.sleep(2)
        assert bridge.process is not None
        assert bridge.process.poll() is None, "the bridge survives a full disk"
        filler.unlink()
        filler = None
        victoria.start()
        back = time.monotonic()
        recovered_s = None
        while time.monotonic() - back < 90:
            health = bridge.health()
            assert health is not None
            influx = health["sinks"]["influx"]
            if influx["connected"] and influx.get("spool_readings", 1) == 0 and influx["queued"] == 0:
                recovered_s = time.monotonic() - back
                break
            time.sleep(0.2)
        wait_export(victoria, '{__name__=~"simulated_.*"}', lambda s: len(s) >= 10, 30)
    finally:
        if filler is not None:
            with contextlib.suppress(OSError):
                filler.unlink()
        bridge.stop()
    # counted once the bridge has stopped and VictoriaMetrics shows all it took (not 2 s after)
    series = settled_export(victoria, '{__name__=~"simulated_.*"}')
    per_meter = landed(series, INTERVAL_S)
    lost = sum(item.missing() for item in per_meter.values())
    ok = errors_reported > 0 and ha_states >= 5 and recovered_s is not None and lost == 0
    record_figure(
        "chaos_disk_full",
        area="Chaos",
        check="Spool volume full (2 MiB tmpfs filled) while InfluxDB is down",
        goal="keeps publishing to HA, reports the condition, recovers when space returns",
        measured=(
            f"{ha_states} HA states received while full; {errors_reported} spool errors on /healthz and "
            f'`meterbridge_sink_errors{{kind="spool"}}`; '
            + (f"recovered {recovered_s:.1f} s after space and InfluxDB returned; " if recovered_s else "no recovery; ")
            + f"{lost} readings lost"
        ),
        ok=ok,
        test=request.node.nodeid,
    )
    assert errors_reported > 0, "the full disk is reported on /healthz"
    assert 'meterbridge_sink_errors_total{kind="spool",sink="influx"}' in metrics or 'kind="spool"' in metrics
    assert recovered_s is not None, "the spool drained and InfluxDB got the data after space returned"
    assert lost == 0
