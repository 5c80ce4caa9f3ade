"""The EMU-2 source against a simulated device on a pseudo-terminal (and a real Mosquitto end to end)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.emu2_sim import Emu2Simulator
from helpers.mosquitto import Mosquitto
from helpers.mqtt import recording
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig
from meterbridge.model import Event, MeterAvailability, Quantity, Reading
from meterbridge.sources import SourceContext
from meterbridge.sources.emu2.config import Emu2SourceConfig
from meterbridge.sources.emu2.source import Emu2Source
from meterbridge.sources.emu2.transport import COMMAND_GAP_S, Emu2Transport
from meterbridge.stats import SourceStats


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Emu2Simulator]:
    """A simulated EMU-2 exporting 1.5 kW."""
    device = Emu2Simulator(tmp_path / "emu2")
    device.meter.demand_w = -1500.0
    device.meter.delivered_kwh = 1234.567
    device.meter.received_kwh = 89.012
    device.start()
    yield device
    device.stop()


def bridge_config(broker: Mosquitto, base_topic: str, port: str, **source: Any) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": {"id": "test", "currency": "USD"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"discovery_prefix": f"{base_topic}/ha", "min_interval_s": 0},
            "health": {"enabled": False},
            "sources": [{"type": "emu2", "id": "grid", "port": port, "demand_interval_s": 1, **source}],
        }
    )


@contextlib.asynccontextmanager
async def running(config: BridgeConfig) -> AsyncIterator[Bridge]:
    async with Bridge(config) as bridge:
        yield bridge


def _state(rec: Any, topic: str) -> dict[str, Any]:
    return rec.json(topic) if topic in rec.last else {}


async def test_end_to_end_retained_state_with_export(broker: Mosquitto, base_topic: str, sim: Emu2Simulator) -> None:
    """Simulated EMU-2 -> bridge -> retained state on Mosquitto: negative power on export, both totals."""
    state_topic = f"{base_topic}/meter/grid"
    async with running(bridge_config(broker, base_topic, sim.port)), recording(broker, f"{base_topic}/#") as rec:
        await rec.wait_for(
            lambda r: (
                _state(r, state_topic).get("power") == -1500.0
                and _state(r, state_topic).get("energy_import") == 1234.567
                and _state(r, state_topic).get("energy_export") == 89.012
                and _state(r, state_topic).get("price") == 0.1234
            ),
            timeout=20,
        )
        await rec.wait_for(lambda r: r.last.get(f"{state_topic}/availability") == b"online", timeout=30)
        link_config = f"{base_topic}/ha/sensor/hems/hems_grid_link_quality/config"
        await rec.wait_for(lambda r: link_config in r.last, timeout=30)
        discovery = rec.json(link_config)
        assert discovery["entity_category"] == "diagnostic"
        assert discovery["unit_of_measurement"] == "%"
        assert discovery["device"]["model"] == "Z105-2-EMU2-LEDD_JM"
        assert discovery["device"]["sw_version"] == "2.0.0 (7400)"
    # retained: a client connecting afterwards still gets the last state
    async with recording(broker, state_topic) as late:
        await late.wait_for(lambda r: state_topic in r.last, timeout=30)
        assert late.json(state_topic)["power"] == -1500.0
    assert sim.commands[:4] == ["initialize", "get_device_info", "get_meter_list", "get_connection_status"]
    assert sim.commands.count("set_schedule") == 2
    assert sim.demand_interval_s == 1


async def test_unplug_marks_offline_and_replug_recovers(broker: Mosquitto, base_topic: str, sim: Emu2Simulator) -> None:
    """USB unplugged: meter offline; plugged back: the source reopens by itself and values flow again."""
    state_topic = f"{base_topic}/meter/grid"
    availability = f"{state_topic}/availability"
    async with running(bridge_config(broker, base_topic, sim.port)) as bridge:
        async with recording(broker, f"{base_topic}/#") as rec:
            await rec.wait_for(lambda r: r.last.get(availability) == b"online", timeout=20)
            sim.unplug()
            await rec.wait_for(lambda r: r.last.get(availability) == b"offline", timeout=30)
            # failed reopen attempts while the port is gone: counted, not assumed of a time
            errors = bridge.stats.sources["grid"].errors
            await rec.wait_for(lambda _r: errors["connection"] >= 2, timeout=60)
            sim.meter.demand_w = 800.0
            sim.replug()
            await rec.wait_for(
                lambda r: r.last.get(availability) == b"online" and _state(r, state_topic).get("power") == 800.0,
                timeout=30,
            )
        source = bridge.sources[0]
        assert isinstance(source, Emu2Source)
        assert source.sessions >= 2
        assert bridge.stats.sources["grid"].errors["connection"] >= 2


async def test_commands_are_serialized_with_a_gap(sim: Emu2Simulator) -> None:
    """Concurrent commands go out one at a time, COMMAND_GAP_S apart (the device does not queue)."""
    transport = await Emu2Transport.open(sim.port)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(transport.send("get_connection_status") for _ in range(4)))
        elapsed = loop.time() - started
        data = b""
        while data.count(b"</ConnectionStatus>") < 4:
            data += await transport.read(5)
    finally:
        transport.close()
    assert elapsed >= 3 * COMMAND_GAP_S
    assert sim.commands.count("get_connection_status") == 4


async def collect(
    source: Emu2Source, seconds: float, enough: Callable[[list[Event], SourceStats], bool]
) -> tuple[list[Event], SourceStats]:
    """Run `source` for at least `seconds`, then on until `enough` holds: what a test counts is
    waited for, not assumed of a time window (a loaded machine gets less done in one). The
    minute is a hang bound only."""
    events: list[Event] = []
    ctx = SourceContext(source.id, SourceStats("emu2", 300), events.append)
    task = asyncio.create_task(source.run(ctx))
    try:
        await asyncio.sleep(seconds)
        async with asyncio.timeout(60):
            while not enough(events, ctx.stats):
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return events, ctx.stats


def powers_in(events: list[Event]) -> list[float]:
    return [e.value for e in events if isinstance(e, Reading) and e.quantity is Quantity.POWER]


async def test_polls_demand_when_nothing_is_pushed(tmp_path: Path) -> None:
    """A device that ignores the demand schedule is polled after three silent intervals."""
    device = Emu2Simulator(tmp_path / "emu2", push_demand=False).start()
    device.meter.demand_w = 321.0
    try:
        source = Emu2Source(Emu2SourceConfig(type="emu2", id="grid", port=device.port, demand_interval_s=1))
        events, _ = await collect(source, 5.5, lambda events, _stats: source.polls >= 1 and bool(powers_in(events)))
    finally:
        device.stop()
    powers = powers_in(events)
    assert "get_instantaneous_demand" in device.commands
    assert source.polls >= 1
    assert powers
    assert set(powers) == {321.0}


async def test_chaos_never_yields_a_wrong_value(tmp_path: Path) -> None:
    """Cut fragments, replies inside pushes and 0xFF junk are counted and skipped; every value is right."""
    device = Emu2Simulator(tmp_path / "emu2", chaos=True, chaos_rate=0.4, seed=3)
    device.meter.demand_w = -250.0
    device.start()
    try:
        source = Emu2Source(
            Emu2SourceConfig(type="emu2", id="grid", port=device.port, demand_interval_s=1, summation_interval_s=1)
        )
        events, stats = await collect(
            source, 8, lambda events, stats: len(powers_in(events)) >= 2 and stats.errors["garbled"] >= 1
        )
    finally:
        device.stop()
    powers = powers_in(events)
    imports = [e.value for e in events if isinstance(e, Reading) and e.quantity is Quantity.ENERGY_IMPORT]
    assert len(powers) >= 2
    assert set(powers) == {-250.0}
    assert set(imports) <= {6613.405}
    assert stats.errors["garbled"] >= 1
    assert not [e for e in events if isinstance(e, MeterAvailability) and not e.available]
