"""The InfluxDB sink against a real write peer: VictoriaMetrics speaking `/api/v2/write`.

VictoriaMetrics stores a point's fields as series `<measurement>_<field>` with the tags
as labels. What VictoriaMetrics cannot do (answer a write with InfluxDB's 400/503) is
exercised against a small aiohttp server in `test_4xx_quarantined_5xx_retried`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from helpers.mosquitto import Mosquitto
from helpers.net import free_port, serving
from helpers.victoria import Victoria, sample_count
from meterbridge.config import BridgeConfig
from meterbridge.errors import SinkError
from meterbridge.model import MeterDescription, Quantity, Reading
from meterbridge.sinks.influx import InfluxSink
from meterbridge.sinks.influx.spool import Spool

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def config(url: str, spool: Path, **spool_extra: Any) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": {"id": "home"},
            "mqtt": {"username": "bridge", "password": "unused"},
            "influx": {"url": url, "token": "t0ken", "replication_poll_s": 0, "flush_interval_s": 0.2},
            "spool": {"path": str(spool), **spool_extra},
        }
    )


@pytest.fixture
async def sink_factory() -> AsyncIterator[Any]:
    sinks: list[InfluxSink] = []

    async def make(cfg: BridgeConfig) -> InfluxSink:
        sink = InfluxSink(cfg.mqtt_context, cfg.influx, cfg.spool)
        await sink.start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


def readings(meter: str, step: int, n_quantities: int = 2) -> list[Reading]:
    ts = T0 + timedelta(milliseconds=100 * step)
    out = [Reading.of(meter, Quantity.POWER, float(step), ts)]
    if n_quantities > 1:
        out.append(Reading.of(meter, Quantity.ENERGY_IMPORT, step / 1000, ts))
    return out


async def test_points_arrive_with_tags_fields_and_timestamps(
    victoria: Victoria, tmp_path: Path, sink_factory: Any
) -> None:
    sink = await sink_factory(config(victoria.url, tmp_path / "spool.sqlite"))
    await sink.handle([MeterDescription("grid_a", "Grid A", "shelly", phase="a", via="pro3em")])
    await sink.handle([r for step in range(50) for r in readings("grid_a", step)])
    series = await asyncio.to_thread(victoria.export, '{__name__=~"shelly_.*"}', lambda s: sample_count(s) >= 100)
    by_name = {s.labels["__name__"]: s for s in series}
    assert set(by_name) == {"shelly_power", "shelly_energy_import"}
    power = by_name["shelly_power"]
    assert {k: v for k, v in power.labels.items() if k != "__name__" and k != "db"} == {
        "site": "home",
        "meter": "grid_a",
        "source": "pro3em",
        "phase": "a",
    }
    assert power.values == [float(step) for step in range(50)]
    assert power.timestamps == [int((T0 + timedelta(milliseconds=100 * s)).timestamp() * 1000) for s in range(50)]
    assert by_name["shelly_energy_import"].values == pytest.approx([s / 1000 for s in range(50)])
    assert sink.spool.rows == 0


@pytest.mark.slow
async def test_outage_of_30s_every_reading_arrives_once(victoria: Victoria, tmp_path: Path, sink_factory: Any) -> None:
    sink = await sink_factory(config(victoria.url, tmp_path / "spool.sqlite"))
    step = 0

    async def feed(seconds: float) -> None:
        nonlocal step
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await sink.handle(readings("house", step, 1))
            step += 1
            await asyncio.sleep(0.05)

    await feed(3)
    await asyncio.to_thread(victoria.stop)
    await feed(30)
    assert sink.spool.readings > 0, "during the outage readings are spooled"
    assert sink.stats.connected is False
    await asyncio.to_thread(victoria.start)
    await feed(3)
    total = step
    series = await asyncio.to_thread(
        victoria.export, '{__name__="unknown_power"}', lambda s: sample_count(s) >= total, 60.0
    )
    [power] = series
    assert sorted(power.values) == [float(i) for i in range(total)]  # every one, once
    assert sink.spool.rows == 0
    assert sink.stats.connected is True


async def test_spool_full_drops_oldest_and_counts(tmp_path: Path, sink_factory: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sink = await sink_factory(config(dead, tmp_path / "spool.sqlite", max_bytes=64 * 1024, sync_interval_s=0.2))
    for chunk in range(40):
        await sink.handle(
            [r for step in range(chunk * 500, chunk * 500 + 500) for r in readings(f"m{chunk % 7}", step)]
        )
        await asyncio.sleep(0.15)
    await asyncio.sleep(0.5)
    assert sink.spool.bytes <= 64 * 1024
    assert sink.stats.gauges["spool_dropped_readings"] > 0
    assert sink.stats.gauges["spool_dropped_readings"] + sink.spool.readings + len(sink._memory) * 2 >= 40 * 1000 - 2000
    head = sink.spool.head(10)
    assert head is not None
    assert b" " in head.payload
    assert not head.payload.startswith(b"unknown,meter=m0,site=home,source=m0 power=0,")


async def test_4xx_quarantined_5xx_retried(tmp_path: Path, sink_factory: Any) -> None:
    # InfluxDB's answers that VictoriaMetrics never gives: 503 (+Retry-After) then 204; 400 for one batch.
    calls: list[bytes] = []

    async def write(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append(body)
        if b"power=13" in body:
            return web.json_response({"code": "invalid", "message": "unable to parse"}, status=400)
        if len(calls) == 1:
            return web.json_response(
                {"code": "unavailable", "message": "later"}, status=503, headers={"Retry-After": "1"}
            )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    async with serving(app) as port:
        sink = await sink_factory(config(f"http://127.0.0.1:{port}", tmp_path / "spool.sqlite"))
        gauges = sink.stats.gauges

        async def until(done: Any) -> None:
            # each reading goes in once the one before is settled, so each is a batch of its own:
            # waited for, not assumed after a sleep (a slow sender would batch 12 with 13, or 13
            # with 14); 60 s is a hang bound only
            async with asyncio.timeout(60):
                while not done():
                    await asyncio.sleep(0.05)

        await sink.handle(readings("a", 12, 1))
        await until(lambda: gauges["sent_readings"] >= 1)  # after the 503 and its Retry-After
        await sink.handle(readings("a", 13, 1))
        await until(lambda: gauges["quarantined_batches"] >= 1)
        await sink.handle(readings("a", 14, 1))
        await until(lambda: gauges["sent_readings"] >= 2)
        assert sink.stats.gauges["quarantined_batches"] == 1
        [entry] = sink.spool.quarantined()
        assert entry.reason.startswith("HTTP 400")
        assert "unable to parse" in entry.reason
        assert b"power=13" in entry.payload
        assert sum(b"power=12" in c for c in calls) == 2  # retried after the 503
        assert sum(b"power=13" in c for c in calls) == 1  # never retried
        assert sink.stats.gauges["sent_readings"] == 2


def spooled_ids(path: Path) -> list[int]:
    """The ids of the rows committed to the spool at `path`, read as another process would."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [row[0] for row in db.execute("SELECT id FROM spool ORDER BY id")]
    except sqlite3.OperationalError:  # the bridge has not made its table yet
        return []
    finally:
        db.close()


@pytest.mark.slow
def test_sigkill_then_restart_replays_spool(tmp_path: Path, broker: Mosquitto) -> None:
    spool_path = tmp_path / "spool.sqlite"
    vm = Victoria(tmp_path / "vm")  # not started yet: the first run can only spool
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"""
site: {{id: home}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: "${{MQTT_PASSWORD}}", base_topic: t_kill}}
health: {{enabled: false}}
influx: {{url: "{vm.url}", token: "${{INFLUX_TOKEN}}", replication_poll_s: 0}}
spool: {{path: "{spool_path}"}}
sources:
  - {{type: simulated, id: house, interval_s: 0.1}}
"""
    )
    env = {**os.environ, "MQTT_PASSWORD": broker.password("bridge"), "INFLUX_TOKEN": "t0ken"}
    cmd = [sys.executable, "-m", "meterbridge.cli", "run", "--config", str(cfg)]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The bridge commits the spool as it runs (every sync_interval_s), not only when it stops:
        # seen from outside as rows that keep coming, then it is killed right after one more came.
        # Shown by the rows, not by how many seconds the kill cost (that depends on the machine's
        # load; tests/reliability/test_chaos_kill9.py measures it as a figure). 60 s: a hang bound.
        deadline = time.monotonic() + 60
        while len(committed := spooled_ids(spool_path)) < 3:
            assert first.poll() is None, "the bridge runs"
            assert time.monotonic() < deadline, f"{len(committed)} spool rows after 60 s"
            time.sleep(0.1)
        while (before_kill := spooled_ids(spool_path)) == committed:
            assert time.monotonic() < deadline, "no spool row after the first ones"
            time.sleep(0.05)
        killed_at = datetime.now(UTC)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert set(before_kill) <= set(spooled_ids(spool_path)), "a kill -9 loses nothing that was committed"
    spool = Spool(spool_path, 10**9)
    head = spool.head(10**9)
    spool.close()
    assert head is not None
    newest_ms = max(int(line.rsplit(b" ", 1)[1]) for line in head.payload.splitlines())
    lost_s = (killed_at - datetime.fromtimestamp(newest_ms / 1000, UTC)).total_seconds()
    print(f"kill -9: newest spooled reading {lost_s:.2f} s before the kill")  # a figure, not a test
    spooled = head.lines
    vm.start()
    second = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        series = vm.export('{__name__="simulated_power"}', lambda s: sample_count(s) >= spooled, 60.0)
        stamps = {t for s in series for t in s.timestamps}
        assert newest_ms in stamps
        assert sample_count(series) >= spooled
    finally:
        second.terminate()
        second.wait(15)
        vm.stop()


async def test_unwritable_spool_while_influx_is_down_keeps_the_sender_alive(
    tmp_path: Path, sink_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full (the spool refuses writes) during an outage: nothing lost, sent once InfluxDB is back.

    Found by tests/reliability/test_chaos_disk_full.py: the sender task used to die on the spool's
    SinkError, and the sink never sent again.
    """
    up = False
    calls: list[bytes] = []

    async def write(request: web.Request) -> web.Response:
        calls.append(await request.read())
        return web.Response(status=204) if up else web.json_response({"code": "unavailable"}, status=503)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    async with serving(app) as port:
        cfg = config(f"http://127.0.0.1:{port}", tmp_path / "spool.sqlite")
        assert cfg.influx is not None
        cfg = cfg.model_copy(update={"influx": cfg.influx.model_copy(update={"max_retry_delay_s": 1.0})})
        sink = await sink_factory(cfg)

        def full(*_args: Any, **_kwargs: Any) -> list[int]:
            raise SinkError("cannot write spool: database or disk is full")

        monkeypatch.setattr(sink.spool, "append", full)
        for step in range(20):
            await sink.handle(readings("a", step, 1))
            await asyncio.sleep(0.1)
        async with asyncio.timeout(60):  # the refused spool write waited for; a hang bound only
            while sink.stats.errors["spool"] < 1:
                await asyncio.sleep(0.1)
        assert all(not task.done() for task in sink._tasks), "sender and syncer survive a full disk"
        monkeypatch.undo()
        up = True
        for _ in range(600):  # 60 s: a hang bound only
            if sink.stats.gauges["sent_readings"] >= 20:
                break
            await asyncio.sleep(0.1)
        assert sink.stats.gauges["sent_readings"] == 20
        sent = b"\n".join(calls[-5:])
        assert all(f"power={step} ".encode() in b"\n".join(calls) for step in range(20)), sent
