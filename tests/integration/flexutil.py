"""Shared set-up of the flex integration tests: config, controller, meter feed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from helpers.mosquitto import Mosquitto
from helpers.relay_sim import RelaySim
from meterbridge.app import build_flex
from meterbridge.config import BridgeConfig
from meterbridge.flex.baseline import PeriodRecord
from meterbridge.flex.controller import FlexController
from meterbridge.flex.events import FlexEvent
from meterbridge.flex.ledger import LedgerFile
from meterbridge.flex.policy import Direction
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


#: A settled event of the synthetic history (`write_settlement_history`): a Thursday, 17:00-18:00
#: UTC, 3 to 10 days before the run (whole weeks after Thursday 26 Nov 2026: the same weekdays).
#: Not a fixed date: the controller drops ledger lines older than `keep_days` (70) before its
#: clock's now, so from late January 2027 the baseline's days of a fixed 26 Nov were gone.
_FIRST_SETTLE_START = datetime(2026, 11, 26, 17, tzinfo=UTC)
SETTLE_START = _FIRST_SETTLE_START + timedelta(
    weeks=max(0, (datetime.now(UTC) - timedelta(days=3) - _FIRST_SETTLE_START) // timedelta(weeks=1))
)
SETTLE_END = SETTLE_START + timedelta(hours=1)
#: The history's first day: 25 days before the event's (a Sunday, as 1 Nov 2026 for 26 Nov).
HISTORY_START = SETTLE_START.replace(hour=0) - timedelta(days=25)
#: By hand: the site draws 2 kW on every half-hour of the history but 800 W in the event, so every
#: baseline (10 previous working days, 10 of 10, the 2 kW at the start) is 1.0 kWh a period and
#: 0.6 kWh a period is delivered; the immersion heater (1 kW 17:00-18:00 daily) is off in the event.
SETTLE_SITE_KWH = (0.6, 0.6)
SETTLE_IMMERSION_KWH = (0.5, 0.5)
SETTLE_TARGET_W = 1500.0  # 1.5 kWh asked for: 1.2 delivered is 80 %


def write_settlement_history(ledger_path: Path) -> None:
    """Write the history (`HISTORY_START` to the end of the event's day) of the site meter `site`
    and the asset meter `immersion` into the ledger."""
    records: list[PeriodRecord] = []
    totals = {"site": 100.0, "immersion": 10.0}
    at = HISTORY_START
    while at < SETTLE_START.replace(hour=0) + timedelta(days=1):
        in_event = SETTLE_START <= at < SETTLE_END
        heater_hours = 17 <= at.hour < 18
        powers = {"site": 800.0 if in_event else 2000.0, "immersion": 1000.0 if heater_hours and not in_event else 0.0}
        for meter, watts in powers.items():
            first = totals[meter]
            last = first + watts * 1799 / 3_600_000  # the last sample one second before the period ends
            records.append(
                PeriodRecord(
                    meter,
                    at,
                    at,
                    first,
                    at + timedelta(seconds=1799),
                    last,
                    0.0,
                    0.0,
                    at + timedelta(seconds=1799),
                    watts,
                )
            )
            totals[meter] = first + watts * 1800 / 3_600_000
        at += timedelta(minutes=30)
    LedgerFile(ledger_path).append(records)


def settlement_event() -> FlexEvent:
    """The event `write_settlement_history` has the answer for."""
    return FlexEvent("settle-1", "mqtt", Direction.DOWN, SETTLE_START, SETTLE_END, SETTLE_TARGET_W, None)
