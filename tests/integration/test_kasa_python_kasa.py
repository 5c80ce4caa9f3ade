"""The emulated plugs read by python-kasa 0.12, a real Kasa client (UDP discovery, then TCP).

python-kasa keys devices by the reply's source IP, so each plug that must be visible to
it gets its own loopback address (127.0.0.x; Linux routes all of 127/8 to `lo`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from kasa import Device, Discover, KasaException, Module

from helpers.kasa import started_sink
from meterbridge.model import MeterAvailability, Quantity, Reading
from meterbridge.sinks.kasa.sink import KasaSink

PLUGS = [
    {"id": "heatpump", "alias": "Heat pump", "mac": "52:00:00:00:00:01", "meter": "heatpump", "address": "127.0.0.2"},
    {"id": "ev", "alias": "EV charger", "mac": "52:00:00:00:00:02", "meter": "ev", "address": "127.0.0.3"},
    {"id": "router", "alias": "Router", "mac": "52:00:00:00:00:03", "watts": 12.5, "address": "127.0.0.4"},
    {"id": "lamp", "alias": "Lamp", "mac": "52:00:00:00:00:04", "watts": 40.0},
    {"id": "fridge", "alias": "Fridge", "mac": "52:00:00:00:00:05", "meter": "fridge"},
    {"id": "kitchen", "alias": "Kitchen", "mac": "52:00:00:00:00:06", "aggregate": ["lamp", "fridge"],
     "address": "127.0.0.5"},
    {"id": "grid", "alias": "Grid", "mac": "52:00:00:00:00:07", "meter": "grid"},
]  # fmt: skip


def readings(meter: str, power: float, voltage: float, current: float, total: float) -> list[Reading]:
    """One meter's power, voltage, current and import total, as a source would give them."""
    ts = datetime.now(UTC)
    return [
        Reading.of(meter, Quantity.POWER, power, ts),
        Reading.of(meter, Quantity.VOLTAGE, voltage, ts),
        Reading.of(meter, Quantity.CURRENT, current, ts),
        Reading.of(meter, Quantity.ENERGY_IMPORT, total, ts),
    ]


@pytest.fixture
async def sink() -> AsyncIterator[KasaSink]:
    """The plugs above, serving on 127.0.0.1-5 and a free port."""
    instance = await started_sink(PLUGS)
    await instance.handle(
        [
            *readings("heatpump", 2345.6, 231.2, 10.15, 1234.567),
            *readings("ev", 7200.0, 229.8, 31.33, 512.25),
            *readings("fridge", 85.5, 230.4, 0.41, 33.125),
            *readings("grid", -1500.0, 232.0, 6.47, 6613.405),
        ]
    )
    yield instance
    await instance.close()


async def _discover(sink: KasaSink) -> dict[str, Device]:
    found = await Discover.discover(target="127.0.0.1", port=sink.config.port, discovery_timeout=1)
    return found


async def _energy(device: Device) -> tuple[float, float, float, float]:
    await device.update()
    energy = device.modules[Module.Energy]
    values = (energy.current_consumption, energy.voltage, energy.current, energy.consumption_total)
    assert all(v is not None for v in values), values
    return values  # type: ignore[return-value]


async def test_python_kasa_discovers_every_exposed_plug(sink: KasaSink) -> None:
    found = await _discover(sink)
    try:
        by_mac = {device.mac: (host, device) for host, device in found.items()}
        # Every plug on its own address, plus the first plug without one on the shared
        # address; aggregate members (lamp, fridge) are hidden inside "kitchen".
        assert {mac: host for mac, (host, _) in by_mac.items()} == {
            "52:00:00:00:00:01": "127.0.0.2",
            "52:00:00:00:00:02": "127.0.0.3",
            "52:00:00:00:00:03": "127.0.0.4",
            "52:00:00:00:00:06": "127.0.0.5",
            "52:00:00:00:00:07": "127.0.0.1",
        }
        for _host, device in by_mac.values():
            assert device.model.startswith("HS110")
            assert device.has_emeter
    finally:
        for device in found.values():
            await device.disconnect()


async def test_python_kasa_reads_the_bridge_readings_over_tcp(sink: KasaSink) -> None:
    found = await _discover(sink)
    try:
        heatpump, ev, kitchen, grid = (found[h] for h in ("127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.1"))
        assert await _energy(heatpump) == pytest.approx((2345.6, 231.2, 10.15, 1234.567))
        assert heatpump.alias == "Heat pump"
        assert await _energy(ev) == pytest.approx((7200.0, 229.8, 31.33, 512.25))
        # export shows as negative power, as in the readings
        assert await _energy(grid) == pytest.approx((-1500.0, 232.0, 6.47, 6613.405))
        # aggregate: lamp (static 40 W) + fridge; currents and totals add, voltage averages
        power, voltage, current, total = await _energy(kitchen)
        assert power == pytest.approx(40.0 + 85.5)
        assert current == pytest.approx(40.0 / 230.0 + 0.41, abs=1e-3)
        assert voltage == pytest.approx((230.0 + 230.4) / 2)
        assert total == pytest.approx(33.125, abs=1e-3)  # plus the lamp's few seconds

        # new readings show on the next poll; an unavailable meter's plug stops answering
        await sink.handle(readings("heatpump", 15.0, 230.9, 0.07, 1234.6))
        assert await _energy(heatpump) == pytest.approx((15.0, 230.9, 0.07, 1234.6))
        await sink.handle([MeterAvailability("ev", False)])
        with pytest.raises(KasaException):
            await ev.update()
    finally:
        for device in found.values():
            await device.disconnect()


async def test_static_plug_holds(sink: KasaSink) -> None:
    device = await Discover.discover_single("127.0.0.4", port=sink.config.port, discovery_timeout=1)
    try:
        first = await _energy(device)
        await asyncio.sleep(1.2)
        second = await _energy(device)
        assert first[:3] == second[:3] == pytest.approx((12.5, 230.0, 12.5 / 230.0), abs=1e-4)
        assert second[3] >= first[3]  # its total counts up with time, never down
    finally:
        await device.disconnect()


async def test_control_commands_are_refused_and_counted(sink: KasaSink) -> None:
    device = await Discover.discover_single("127.0.0.2", port=sink.config.port, discovery_timeout=1)
    try:
        await device.update()
        with pytest.raises(KasaException):
            await device.turn_off()
        with pytest.raises(KasaException):
            await device.reboot()
        assert sink.stats.errors["refused"] == 2
        await device.update()
        assert device.is_on  # a read-only plug stays on
    finally:
        await device.disconnect()
