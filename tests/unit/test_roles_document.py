"""The roles document (`hems/meters`) names the flex entities the bridge announces, by the unique ids
its discovery configs carry: the HEMS dashboard shows those and no others (issue 26 follow-up)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from meterbridge.discovery import DiscoveryConfig, discovered_sources
from meterbridge.flex.assets import AssetConfig
from meterbridge.flex.entities import FlexTopics, flex_entities
from meterbridge.ha_entities import discovery_config
from meterbridge.ha_topics import Topics
from meterbridge.roles import MeterRole, meters_document
from meterbridge.sections import HomeAssistantConfig, MqttConfig, MqttContext, SiteConfig


def test_the_document_lists_the_flex_entities_announced() -> None:
    asset = AssetConfig.model_validate(
        {
            "id": "heat_pump",
            "name": "Heat pump",
            "kind": "heat_pump",
            "rated_power_w": 2500,
            "actuator": {"type": "mqtt", "command_topic": "hems/demo/heat_pump/relay/set"},
        }
    )
    entities = flex_entities(FlexTopics("hems"), [asset])
    document = meters_document("demo", {"grid": MeterRole(source_type="simulated")}, entities)
    listed = {item["key"]: item for item in document["flex"]}
    assert "flex_heat_pump_allow" in listed
    assert not any("ev" in key.split("_") for key in listed), "no EV asset: no EV entity"
    for entity in entities:
        _, payload = discovery_config(entity, Topics(), "demo")
        assert listed[entity.key] == {
            "component": entity.component,
            "key": entity.key,
            "unique_id": payload["unique_id"],
        }
    assert meters_document("demo", {})["flex"] == [], "flex off: none"


def test_zigbee2mqtt_is_looked_for_under_its_base_topic() -> None:
    """Z2M_BASE_TOPIC reaches the found Zigbee2MQTT source and the document (Zigbee2MQTT's unique ids
    end in it: the hems integration finds its duplicate sensors by them)."""
    found = DiscoveryConfig(emu2=False, shelly=False, tasmota=False, glow=False, zigbee2mqtt_base_topic="z2m/home")
    context = MqttContext(
        SiteConfig(),
        MqttConfig.model_validate({"username": "bridge", "password": "unused-here-0123"}),
        HomeAssistantConfig(),
    )
    (source,) = discovered_sources(found, [], context)
    assert source.config.base_topic == "z2m/home"
    document = meters_document("home", {}, zigbee2mqtt_base_topic="z2m/home")
    assert document["zigbee2mqtt_base_topic"] == "z2m/home"
    with pytest.raises(ValidationError):
        DiscoveryConfig(zigbee2mqtt_base_topic="zigbee2mqtt/#")
