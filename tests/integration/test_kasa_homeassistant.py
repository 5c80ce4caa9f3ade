"""The pinned Home Assistant drives a plug: an `input_number` as a dimmer's brightness,
read by the `ha` source over HA's websocket, mapped to watts, served as a Kasa plug and
read back with python-kasa.

Needs `tests/helpers/homeassistant.py` and `make setup-ha` (from the `utility` branch);
skipped until they are present.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kasa import Discover, Module

from helpers.kasa import started_sink
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig

homeassistant = pytest.importorskip("helpers.homeassistant")

pytestmark = [pytest.mark.homeassistant, pytest.mark.slow]

DIMMER_YAML = """\
input_number:
  dimmer:
    name: Dimmer
    min: 0
    max: 255
    step: 1
    initial: 255
"""


async def test_input_number_drives_a_plugs_watts(tmp_path: Path) -> None:
    ha = homeassistant.HomeAssistant(tmp_path / "ha", extra_yaml=DIMMER_YAML)
    await asyncio.to_thread(ha.start)
    sink = await started_sink(
        [{"id": "lamp", "alias": "Lamp", "mac": "52:00:00:00:02:01", "meter": "lamp", "address": "127.0.0.2"}]
    )
    config = BridgeConfig.model_validate(
        {
            "mqtt": {"username": "unused", "password": "unused"},
            "health": {"enabled": False},
            "sources": [
                {
                    "type": "ha",
                    "id": "ha",
                    "url": ha.ws_url,
                    "token": ha.token,
                    "entities": [
                        {
                            "entity_id": "input_number.dimmer",
                            "meter": "lamp",
                            "linear": {"value_max": 255, "watts_min": 2, "watts_max": 62},
                        }
                    ],
                }
            ],
        }
    )
    # the sink is already started; Bridge.start starts it again only through its list
    bridge = Bridge(config, sinks=[])
    bridge.hub = type(bridge.hub)([sink], config.hub.queue_size)
    await bridge.start()
    device = None
    try:
        device = await Discover.discover_single("127.0.0.2", port=sink.config.port, discovery_timeout=1)

        async def watts_become(expected: float) -> None:
            async with asyncio.timeout(60):  # a hang bound only
                while True:
                    try:
                        await device.update()
                        if device.modules[Module.Energy].current_consumption == pytest.approx(expected):
                            return
                    except Exception:  # noqa: S110 - not answering until the first state arrives
                        pass
                    await asyncio.sleep(0.2)

        await watts_become(62.0)  # initial 255 = full brightness
        for value, watts in ((0, 2.0), (51, 14.0), (128, 32.1176)):
            await ha.rest(
                "POST", "/api/services/input_number/set_value", {"entity_id": "input_number.dimmer", "value": value}
            )
            await watts_become(round(watts, 3))
    finally:
        if device is not None:
            await device.disconnect()
        await bridge.shutdown()
        await sink.close()
        await asyncio.to_thread(ha.stop)
