"""Configuration of a `type: zigbee2mqtt` source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...configbase import Identifier, SourceConfigBase


class Zigbee2MqttSourceConfig(SourceConfigBase):
    """`type: zigbee2mqtt`: Zigbee meters and plugs published by Zigbee2MQTT on the bridge's broker."""

    type: Literal["zigbee2mqtt"] = Field(description="Source family.")
    base_topic: str = Field(
        default="zigbee2mqtt",
        pattern=r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$",
        description="Zigbee2MQTT's `mqtt.base_topic`.",
    )
    devices: list[str] | None = Field(
        default=None,
        description=(
            "Friendly names or IEEE addresses to read (default: every device that exposes power, energy, "
            "temperature, humidity or CO2)."
        ),
    )
    meter_ids: dict[str, Identifier] = Field(
        default_factory=dict,
        description=(
            "Meter id per friendly name or IEEE address (default: `<id>_<IEEE address>`); "
            "key by IEEE address to keep the id when a device is renamed."
        ),
    )
