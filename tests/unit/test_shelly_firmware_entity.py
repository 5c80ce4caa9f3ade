"""The Shelly firmware `update` entity: discovery payload (pinned by snapshot) and state keys
(HA's MQTT `update` platform)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from meterbridge.config import BridgeConfig
from meterbridge.ha_entities import discovery_config
from meterbridge.ha_topics import Topics
from meterbridge.sources.shelly.firmware import ShellyFirmwareEntities, firmware_entities

SNAPSHOT = Path(__file__).parent.parent / "fixtures" / "homeassistant" / "discovery_shelly_firmware.json"


def config(**extra: object) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "site": {"id": "home"},
            "mqtt": {"host": "localhost", "username": "u", "password": "p"},
            "sources": [
                {"type": "shelly", "id": "shelly", "devices": [
                    {"prefix": "shelly/shellyplus1pm-a8032ab12345", "id": "immersion", "name": "Immersion"},
                    {"prefix": "shelly/shellyproem50-08f9e0e67204", "id": "main", "channels": {"0": "grid"}},
                ]},
            ],
            **extra,
        }
    )  # fmt: skip


def test_discovery_snapshot() -> None:
    entities = ShellyFirmwareEntities(config())
    device = entities.devices["shelly/shellyplus1pm-a8032ab12345"]
    topic, payload = discovery_config(entities.entity(device), Topics(), "home")  # as the HA sink announces it
    assert topic == "homeassistant/update/hems/hems_shelly_immersion_firmware/config"
    payload["origin"]["sw_version"] = "<version>"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    assert payload == json.loads(SNAPSHOT.read_text())
    # channel 0 named: the entity joins that meter's device
    named = entities.devices["shelly/shellyproem50-08f9e0e67204"]
    assert named.meter_id == "grid"
    assert discovery_config(entities.entity(named), Topics(), "home")[1]["device"]["identifiers"] == ["hems_home_grid"]
    # described into the catalog the HA sink announces from
    assert [e.object_id for e in entities.catalog.entities()] == [
        "hems_shelly_immersion_firmware",
        "hems_grid_firmware",
    ]


def test_state_keys_follow_the_update_platform() -> None:
    entities = ShellyFirmwareEntities(config())
    device = entities.devices["shelly/shellyplus1pm-a8032ab12345"]
    device.installed, device.latest = "1.3.3", "1.4.4"
    assert device.state() == {
        "installed_version": "1.3.3", "latest_version": "1.4.4", "title": "Shelly firmware", "in_progress": False,
        "release_summary": "",  # HA 2026.10 refuses null here
    }  # fmt: skip
    device.latest, device.last_error = None, "demand response holds its relay: not updated during the event"
    state = device.state()
    assert state["latest_version"] == "1.3.3"  # nothing offered: up to date
    assert state["release_summary"].startswith("Not installed: demand response")


def test_only_with_a_shelly_source_and_discovery_on() -> None:
    assert firmware_entities(config()) is not None
    assert firmware_entities(config(homeassistant={"enabled": False})) is None
    no_shelly = config().model_copy(update={"sources": []})
    assert firmware_entities(no_shelly) is None
