"""Discovery payloads of every entity the bridge announces besides meter sensors, pinned by snapshot.

Flex controls, Shelly relay switches, utility account status, InfluxDB replication health:
`tests/fixtures/homeassistant/entities_<owner>.json` maps each discovery topic to its payload.
Meter sensors are pinned by `test_ha_discovery.py`. `UPDATE_SNAPSHOTS=1` rewrites them: review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from meterbridge.config import BridgeConfig
from meterbridge.flex.entities import FlexTopics, flex_entities
from meterbridge.ha_entities import EntityDescription, discovery_config
from meterbridge.ha_topics import Topics
from meterbridge.model import MeterDescription
from meterbridge.sinks.influx.replication import ReplicationHealth, replication_entities
from meterbridge.sources.shelly.source import ShellySource
from meterbridge.sources.utilitypoll import StatusPublisher, UtilityStatus

SNAPSHOTS = Path(__file__).parent.parent / "fixtures" / "homeassistant"

CONFIG = BridgeConfig.model_validate(
    {
        "site": {"id": "home"},
        "mqtt": {"username": "bridge", "password": "x"},
        "sources": [{"type": "shelly", "id": "shelly", "devices": [{"prefix": "shellyplus1pm-a8032ab12345"}]}],
        "flex": {
            "enabled": True,
            "assets": [
                {
                    "id": "immersion",
                    "name": "Immersion heater",
                    "actuator": {"type": "mqtt", "command_topic": "x/immersion"},
                    "rated_power_w": 3000,
                }
            ],
        },
    }
)
RELAY_METER = MeterDescription(
    "shelly_heater", "Heater", "shelly", manufacturer="Shelly", model="SNSW-001P16EU", sw_version="1.4.4"
)


def announced(entities: list[EntityDescription]) -> list[tuple[str, dict[str, Any]]]:
    """What the HA sink publishes for `entities` (site `home`, base topic `hems`)."""
    return [discovery_config(entity, Topics(), "home") for entity in entities]


def flex_payloads() -> list[tuple[str, dict[str, Any]]]:
    return announced(flex_entities(FlexTopics("hems"), CONFIG.flex.assets))


def shelly_payloads() -> list[tuple[str, dict[str, Any]]]:
    source = ShellySource(CONFIG.sources[0], CONFIG.mqtt_context)  # type: ignore[arg-type]
    return announced([source.relay_entity(RELAY_METER)])


def utility_payloads() -> list[tuple[str, dict[str, Any]]]:
    return announced(StatusPublisher(CONFIG.mqtt_context, "opw", "PG&E", UtilityStatus()).entities())


def replication_payloads() -> list[tuple[str, dict[str, Any]]]:
    health = ReplicationHealth("hems_cloud_meters", "hems-cloud-meters", 10, 5, "ok", False)
    return announced(replication_entities("hems", health))


OWNERS = {
    "flex": flex_payloads,
    "shelly_relay": shelly_payloads,
    "utility_status": utility_payloads,
    "influx_replication": replication_payloads,
}


@pytest.mark.parametrize("owner", list(OWNERS))
def test_entity_snapshot(owner: str) -> None:
    messages = json.loads(json.dumps(OWNERS[owner]()))  # as HA receives them: JSON, tuples as lists
    payloads = {topic: payload for topic, payload in messages}
    assert len(payloads) == len(messages), "two entities share a discovery topic"
    for topic, payload in payloads.items():
        assert payload["origin"]["name"] == "meter-bridge"
        payload["origin"]["sw_version"] = "<version>"  # the snapshot must not change with every release
        component, _node, object_id = topic.split("/")[1:4]
        assert payload["object_id"] == object_id  # HA before 2025.10
        assert payload["default_entity_id"] == f"{component}.{object_id}"  # HA 2025.10 and later
    snapshot = SNAPSHOTS / f"entities_{owner}.json"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(json.dumps(payloads, indent=2, sort_keys=True) + "\n")
    assert snapshot.exists(), f"no snapshot {snapshot.name}: run with UPDATE_SNAPSHOTS=1 and review it"
    assert payloads == json.loads(snapshot.read_text())
