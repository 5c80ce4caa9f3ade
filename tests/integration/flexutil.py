"""Shared set-up of the flex integration tests: config, controller, meter feed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from helpers.mosquitto import Mosquitto
from helpers.relay_sim import RelaySim
from meterbridge.app import build_flex
from meterbridge.config import BridgeConfig
from meterbridge.flex.controller import FlexController
from meterbridge.ha_entities import EntityCatalog
from meterbridge.model import Quantity, Reading, utc_now
from meterbridge.sinks.homeassistant import HomeAssistantSink


def flex_config(
    broker: Mosquitto, base: str, tmp: Path, powers: dict[str, float], discovery: str | None = None, **flex: Any
) -> BridgeConfig:
    """`config_data` validated."""
    return BridgeConfig.model_validate(config_data(broker, base, tmp, powers, discovery, **flex))


def config_data(
    broker: Mosquitto, base: str, tmp: Path, powers: dict[str, float], discovery: str | None = None, **flex: Any
) -> dict[str, Any]:
    """A config with one MQTT-command-topic asset per simulated relay (priority in dict order).

    Discovery goes under `<base>_ha` unless `discovery` is given (a real HA listens on `homeassistant`).
    """
    assets = [
        {
            "id": relay_id,
            "actuator": {
                "type": "mqtt",
                "command_topic": f"{base}/relay/{relay_id}/command",
                "state_topic": f"{base}/relay/{relay_id}/state",
            },
            "rated_power_w": power,
            "meter_id": relay_id,
            "priority": index,
            "min_on_s": 0,
            "min_off_s": 0,
            "max_shed_s": 600,
        }
        for index, (relay_id, power) in enumerate(powers.items())
    ]
    data: dict[str, Any] = {
        "site": {"id": "home"},
        "mqtt": broker.bridge_mqtt(base),
        "homeassistant": {"discovery_prefix": discovery or f"{base}_ha"},
        "health": {"enabled": False},
        "flex": {
            "enabled": True,
            "site_meter_id": "site",
            "assets": assets,
            "state_path": str(tmp / "flex-state.json"),
            "log_path": str(tmp / "flex-events.jsonl"),
            "stagger_s": 2,
            "settle_s": 1,
            "tick_s": 0.2,
            **flex,
        },
    }
    return data


@contextlib.asynccontextmanager
async def running(controller: FlexController, sim: RelaySim | None = None) -> AsyncIterator[FlexController]:
    """Start `controller`, feed it the simulated site meter every 0.2 s, close it at the end."""
    await controller.start()

    async def feed() -> None:
        while True:
            if sim is not None:
                now = utc_now()
                readings = [Reading.of("site", Quantity.POWER, sim.site_w, now)]
                readings += [
                    Reading.of(r.relay_id, Quantity.POWER, r.power_w if r.on else 0.0, now) for r in sim.relays.values()
                ]
                await controller.handle(readings)
            await asyncio.sleep(0.2)

    task = asyncio.create_task(feed())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await controller.close()


def flex_controller(config: BridgeConfig, catalog: EntityCatalog | None = None) -> FlexController:
    """The flex controller as the bridge builds it from `config`; its HA entities go to `catalog`."""
    return build_flex(config.mqtt_context, config.flex, EntityCatalog() if catalog is None else catalog)


@contextlib.asynccontextmanager
async def ha_sink(config: BridgeConfig) -> AsyncIterator[HomeAssistantSink]:
    """The HA sink as the bridge runs it: it announces the catalog's entities and owns
    `<base>/bridge/availability` (every entity's availability)."""
    sink = HomeAssistantSink(config.mqtt_context)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate()` every 0.1 s; AssertionError naming `what` after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.1)
