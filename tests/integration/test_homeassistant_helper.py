"""The Home Assistant test helper itself: start, onboard, REST, websocket, MQTT discovery."""

from __future__ import annotations

import asyncio
import json

import pytest

from helpers.homeassistant import PINNED_VERSION, HomeAssistant
from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for

pytestmark = pytest.mark.homeassistant


async def test_onboarded_with_a_long_lived_token(homeassistant: HomeAssistant) -> None:
    assert homeassistant.version == PINNED_VERSION
    assert (await homeassistant.rest("GET", "/api/"))["message"] == "API running."
    async with homeassistant.websocket() as ws:
        user = await ws.call("auth/current_user")
        assert user["is_owner"]
        assert user["is_admin"]
        # the recorder is up: its websocket commands answer (other tests may have imported)
        assert isinstance(await ws.call("recorder/list_statistic_ids"), list)


async def test_mqtt_discovery_reaches_home_assistant(homeassistant_mqtt: HomeAssistant, broker: Mosquitto) -> None:
    config = {
        "name": "Power",
        "unique_id": "helper_check_power",
        "state_topic": "helper_check/state",
        "device_class": "power",
        "unit_of_measurement": "W",
        "state_class": "measurement",
        "device": {"identifiers": ["helper_check"], "name": "Helper check"},
    }
    async with client_for(broker, "bridge") as client:
        await client.publish("homeassistant/sensor/helper_check_power/config", json.dumps(config), retain=True)
        await client.publish("helper_check/state", "512", retain=True)
    state = None
    for _ in range(100):
        states = await homeassistant_mqtt.rest("GET", "/api/states")
        state = next((s for s in states if s["entity_id"] == "sensor.helper_check_power"), None)
        if state is not None and state["state"] == "512":
            break
        await asyncio.sleep(0.2)
    assert state is not None, homeassistant_mqtt.tail_log()
    assert state["state"] == "512"
    assert state["attributes"]["unit_of_measurement"] == "W"
