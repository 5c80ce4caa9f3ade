"""Readings per second through the hub into the Home Assistant sink, with a real Mosquitto.

Reports readings/s, state messages/s, bridge CPU seconds per 1,000 readings and peak RSS.
Rate limiting is off (`min_interval_s: 0`), so the sink publishes as fast as it can;
readings that arrive while a meter's previous state is being published are folded into
the next state (the latest totals are always exact), which is the sink's design.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.mosquitto import Mosquitto
from helpers.mqtt import recording
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig
from meterbridge.model import Quantity, Reading

METERS = 20
READINGS = 200_000


async def run(broker: Mosquitto) -> dict[str, float]:
    config = BridgeConfig.model_validate(
        {
            "mqtt": broker.bridge_mqtt("hems"),
            "homeassistant": {"min_interval_s": 0},
            "health": {"enabled": False},
            "hub": {"queue_size": 1_000_000},
        }
    )
    bridge = Bridge(config)
    await bridge.start()
    sink = bridge.stats.sinks["homeassistant"]
    while not sink.connected:
        await asyncio.sleep(0.05)
    quantities = [Quantity.POWER, Quantity.ENERGY_IMPORT, Quantity.VOLTAGE, Quantity.CURRENT, Quantity.FREQUENCY]
    async with recording(broker, "hems/meter/+") as rec:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        energy = 0.0
        for n in range(READINGS):
            meter = f"m{n % METERS}"
            quantity = quantities[(n // METERS) % len(quantities)]
            energy += 0.001
            value = energy if quantity is Quantity.ENERGY_IMPORT else float(n % 5000)
            bridge.hub.publish(Reading.of(meter, quantity, value, datetime.now(UTC)))
            if n % 500 == 0:
                await asyncio.sleep(0)
        await bridge.hub.drain(60)
        t_hub = time.perf_counter() - t0
        # wait until the last state of every meter is on the broker
        await rec.wait_for(lambda r: len([t for t in r.last if t.count("/") == 2]) >= METERS, timeout=60)
        await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        states = len(rec.messages)
        # Paced: 1,000 readings/s for 5 s, each a power change of one meter: every one
        # should become a state message on the broker.
        rec.messages.clear()
        paced, rate = 5000, 1000.0
        cpu1 = time.process_time()
        start = time.perf_counter()
        for n in range(paced):
            bridge.hub.publish(Reading.of(f"m{n % METERS}", Quantity.POWER, float(n), datetime.now(UTC)))
            delay = start + (n + 1) / rate - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))
        await rec.wait_for(lambda r: len(r.messages) >= paced, timeout=10)
        paced_cpu = time.process_time() - cpu1
        paced_states = len(rec.messages)
    await bridge.shutdown()
    return {
        "paced_readings": paced,
        "paced_states_received": paced_states,
        "paced_cpu_s_per_1000": paced_cpu / (paced / 1000),
        "burst_readings": READINGS,
        "seconds_through_hub": t_hub,
        "readings_per_s": READINGS / t_hub,
        "burst_states_received": states,
        "burst_seconds_to_last_state": elapsed,
        "burst_cpu_s_per_1000": cpu / (READINGS / 1000),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        try:
            result = asyncio.run(run(broker))
        finally:
            broker.stop()
    print("hub -> Home Assistant sink -> Mosquitto (one process, CPU includes the test's subscriber)")
    for key, value in result.items():
        print(f"  {key:<22} {value:,.3f}" if isinstance(value, float) else f"  {key:<22} {value:,}")


if __name__ == "__main__":
    main()
