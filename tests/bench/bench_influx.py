"""InfluxDB sink benchmark: sustained write rate into VictoriaMetrics, replay rate of a
1-hour backlog, and disk bytes written per 1,000 readings (SD-card wear).

A plain script (`python tests/bench/bench_influx.py`); prints figures, asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.net import free_port
from helpers.victoria import Victoria
from meterbridge.config import BridgeConfig
from meterbridge.model import Quantity, Reading
from meterbridge.sinks.influx import InfluxSink
from meterbridge.sinks.influx.lineprotocol import encode
from meterbridge.sinks.influx.spool import Spool

QUANTITIES = (Quantity.POWER, Quantity.ENERGY_IMPORT, Quantity.VOLTAGE, Quantity.CURRENT, Quantity.FREQUENCY)
METERS = 4  # a household: grid, solar, heat pump, EV; 5 quantities each, every second -> 20 readings/s


def household(second: int, t0: datetime) -> list[Reading]:
    ts = t0 + timedelta(seconds=second)
    return [
        Reading.of(f"m{m}", q, abs(100.0 + m + second % 97) if q is not Quantity.POWER else float(second % 3000), ts)
        for m in range(METERS)
        for q in QUANTITIES
    ]


def influx_sink(url: str, spool: Path) -> InfluxSink:
    config = BridgeConfig.model_validate(
        {
            "mqtt": {"username": "bridge", "password": "x"},
            "influx": {"url": url, "token": "t", "replication_poll_s": 0},
            "spool": {"path": str(spool)},
        }
    )
    assert config.influx is not None
    return InfluxSink(config.mqtt_context, config.influx, config.spool)


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


async def wait_sent(sink: InfluxSink, n: int, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while sink.stats.gauges["sent_readings"] < n and time.monotonic() < end:
        await asyncio.sleep(0.05)


async def sustained(vm: Victoria, work: Path) -> float:
    sink = influx_sink(vm.url, work / "sustained.sqlite")
    await sink.start()
    t0 = datetime.now(UTC) - timedelta(days=2)
    total = 0
    start = time.monotonic()
    for second in range(0, 10_000):
        batch = household(second, t0)
        await sink.handle(batch)
        total += len(batch)
        if second % 50 == 0:
            await asyncio.sleep(0)
    await wait_sent(sink, total)
    elapsed = time.monotonic() - start
    await sink.close()
    return total / elapsed


async def replay(vm: Victoria, work: Path) -> tuple[int, float, float]:
    path = work / "replay.sqlite"
    spool = Spool(path, 512 * 1024 * 1024)
    t0 = datetime.now(UTC) - timedelta(hours=3)
    readings = 0
    for second in range(3600):  # one commit per simulated second, as the syncer would during an outage
        batch = household(second, t0)
        spool.append(encode(batch, "home", {}))
        readings += len(batch)
    size = path.stat().st_size
    spool.close()
    sink = influx_sink(vm.url, path)
    start = time.monotonic()
    await sink.start()
    live_t0 = datetime.now(UTC)
    second = 0
    while sink.spool.rows and time.monotonic() - start < 600:
        await sink.handle(household(second, live_t0))  # live data keeps flowing meanwhile
        second += 1
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - start
    await sink.close()
    return readings, elapsed, size / readings * 1000


async def disk_per_1000(url: str, work: Path, seconds: int) -> float:
    sink = influx_sink(url, work / f"disk-{free_port()}.sqlite")
    await sink.start()  # creating the file is a one-off: not counted
    t0 = datetime.now(UTC) - timedelta(hours=1)
    before = write_bytes()
    readings = 0
    for second in range(seconds):
        batch = household(second, t0)
        await sink.handle(batch)
        readings += len(batch)
        await asyncio.sleep(1.0)
    await asyncio.sleep(1.5)
    written = write_bytes() - before  # before close: a clean stop spools what is pending, once
    await sink.close()
    return written / readings * 1000


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vm = Victoria(work / "vm")
        vm.start()
        try:
            rate = await sustained(vm, work)
            print(f"sustained writes into VictoriaMetrics: {rate:,.0f} readings/s (5 quantities per line)")
            readings, elapsed, spool_bytes = await replay(vm, work)
            print(
                f"replay of a 1-hour backlog ({readings:,} readings, 20/s): {elapsed:.1f} s "
                f"= {3600 / elapsed:,.0f}x real time, {readings / elapsed:,.0f} readings/s while live data flows"
            )
            print(f"spool file size for that hour: {spool_bytes:,.0f} bytes per 1,000 readings")
            healthy = await disk_per_1000(vm.url, work, 30)
            print(f"disk written, InfluxDB up (20 readings/s, 30 s): {healthy:,.0f} bytes per 1,000 readings")
        finally:
            vm.stop()
        outage = await disk_per_1000(f"http://127.0.0.1:{free_port()}", work, 30)
        print(f"disk written, InfluxDB down (20 readings/s, 30 s, spooling): {outage:,.0f} bytes per 1,000 readings")


if __name__ == "__main__":
    asyncio.run(main())
