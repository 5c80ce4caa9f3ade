"""Meters found by default (issue 26): the families the bridge looks for without a `sources` entry.

With no meter configured the bridge still finds what a home has: an EMU-2 or RAVEn on USB (by its
USB ids), every Zigbee2MQTT device that meters power or energy or measures the room, every Shelly
provisioned for this appliance (`shelly/<device id>`), every Tasmota energy monitor that announces
itself, and a Glow CAD. Each is an ordinary source of its family, built from that family's config
model with its defaults and a fixed id (the family's name), so meter ids stay stable across
restarts: `emu2`, `zigbee2mqtt_<IEEE>`, `shelly_<device id>[_<n>]`, `tasmota_<MAC>`, `glow_electricity`.

What the config names explicitly wins: a family is not looked for where an explicit source
already reads the same devices (the rules are `_covered` below), and an explicit source's
devices are left out of what is found. `discovery.<family>: false` turns a family off. A config
without a `discovery` section looks for everything while its `sources` list is empty (the release's
first-boot config) and for nothing once it names a meter (files written before issue 26 keep
their behaviour); the release's default config has the section, so it keeps looking when a
householder adds a source.

A found device that goes away is shown unavailable (its source marks it so) and keeps its HA
entities and history: nothing here ever sends an empty discovery config.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .configbase import StrictModel

if TYPE_CHECKING:
    from .sections import MqttContext
    from .sources import Source

_LOGGER = logging.getLogger(__name__)


#: A meter's role (roles.Role's values; a test keeps the two equal).
RoleName = Literal["grid", "solar", "battery", "ev_charger", "heat_pump", "device", "ignore"]


class RoleRule(StrictModel):
    """A role an operator gives every meter that matches (set once, e.g. in the fleet template)."""

    type: str | None = Field(default=None, description="Source family of the meter (`emu2`, `shelly`, ...).")
    meter: str | None = Field(default=None, description="Glob on the meter id (`shelly_*_1`, `glow_electricity`).")
    model: str | None = Field(default=None, description="Glob on the device's model (`*EM*`).")
    role: RoleName = Field(description="The role proposed for a match (the householder's choice in HA still wins).")

    def matches(self, source_type: str, meter_id: str, model: str | None) -> bool:
        """Whether a meter of this family, id and model matches every pattern given."""
        return (
            (self.type is None or self.type == source_type)
            and (self.meter is None or fnmatch.fnmatchcase(meter_id, self.meter))
            and (self.model is None or (model is not None and fnmatch.fnmatchcase(model, self.model)))
        )


class DiscoveryConfig(StrictModel):
    """Meters found without a `sources` entry; each family can be turned off."""

    emu2: bool = Field(default=True, description="An EMU-2 or RAVEn on USB, found by its USB ids (meter `emu2`).")
    zigbee2mqtt: bool = Field(
        default=True,
        description="Every Zigbee2MQTT device (under `zigbee2mqtt_base_topic`) that meters power or energy or "
        "measures the room (meters `zigbee2mqtt_<IEEE address>`).",
    )
    zigbee2mqtt_base_topic: str = Field(
        default="zigbee2mqtt",
        pattern=r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$",
        description="Zigbee2MQTT's `mqtt.base_topic` (the release's default config takes `Z2M_BASE_TOPIC`).",
    )
    shelly: bool = Field(
        default=True,
        description="Every Shelly provisioned for this appliance (`shelly/<device id>/online`; meters "
        "`shelly_<device id>[_<n>]`).",
    )
    tasmota: bool = Field(
        default=True,
        description="Every Tasmota energy monitor announcing itself on `tasmota/discovery/#` (meters `tasmota_<MAC>`).",
    )
    glow: bool = Field(
        default=True, description="A Hildebrand Glow CAD on `glow/#` (meters `glow_electricity`, `glow_gas`)."
    )
    roles: bool = Field(
        default=True,
        description="Offer each meter's role (grid, solar, battery, EV charger, heat pump, other device, ignore) "
        "and name as Home Assistant entities, kept in `roles_path`, for the Energy and HEMS dashboards.",
    )
    role_rules: list[RoleRule] = Field(
        default_factory=list,
        description="Roles proposed by rule, first match wins, before the device's own proposal "
        "(`[{type: emu2, role: grid}]`); what the householder chooses in HA wins over both.",
    )
    roles_path: Path = Field(
        default=Path("/data/meters.json"),
        description="Where the meters found and the roles chosen for them in Home Assistant are kept.",
    )

    @classmethod
    def off(cls) -> DiscoveryConfig:
        """Nothing looked for, no roles offered: a config that names its meters and says nothing of discovery."""
        return cls(emu2=False, zigbee2mqtt=False, shelly=False, tasmota=False, glow=False, roles=False)


def _emu2(explicit: Sequence[Any], context: MqttContext, found: DiscoveryConfig) -> Source[Any] | None:
    from .sources.emu2.config import Emu2SourceConfig
    from .sources.emu2.source import Emu2Source

    if any(isinstance(s, Emu2SourceConfig) for s in explicit):
        return None  # an explicit EMU-2 source finds the stick by the same USB ids
    return Emu2Source(Emu2SourceConfig(type="emu2", id="emu2", name="Smart meter"), wait_for_device=True)


def _zigbee2mqtt(explicit: Sequence[Any], context: MqttContext, found: DiscoveryConfig) -> Source[Any] | None:
    from .sources.zigbee2mqtt.config import Zigbee2MqttSourceConfig
    from .sources.zigbee2mqtt.source import Zigbee2MqttSource

    config = Zigbee2MqttSourceConfig(type="zigbee2mqtt", id="zigbee2mqtt", base_topic=found.zigbee2mqtt_base_topic)
    if any(isinstance(s, Zigbee2MqttSourceConfig) and s.base_topic == config.base_topic for s in explicit):
        return None  # that network is the explicit source's (its `devices` list says which)
    return Zigbee2MqttSource(config, context.mqtt, f"{context.client_id}-found-zigbee2mqtt")


def _shelly(explicit: Sequence[Any], context: MqttContext, found: DiscoveryConfig) -> Source[Any] | None:
    from .sources.shelly.config import ShellySourceConfig
    from .sources.shelly.source import ShellySource

    shelly = [s for s in explicit if isinstance(s, ShellySourceConfig)]
    if any(s.discover for s in shelly):
        return None  # an explicit source already takes in every provisioned Shelly
    source = ShellySource(ShellySourceConfig(type="shelly", id="shelly", discover=True), context)
    source.excluded = frozenset(device.prefix for s in shelly for device in s.devices)
    return source


def _tasmota(explicit: Sequence[Any], context: MqttContext, found: DiscoveryConfig) -> Source[Any] | None:
    from .sources.mqtt.config import MqttSourceConfig
    from .sources.tasmota.config import TasmotaSourceConfig
    from .sources.tasmota.source import TasmotaSource

    if any(isinstance(s, TasmotaSourceConfig) for s in explicit):
        return None
    presets = [m.device for s in explicit if isinstance(s, MqttSourceConfig) for m in s.meters if m.preset == "tasmota"]
    config = TasmotaSourceConfig(type="tasmota", id="tasmota", exclude=[d for d in presets if d])
    return TasmotaSource(config, context.mqtt, f"{context.client_id}-found-tasmota")


def _glow(explicit: Sequence[Any], context: MqttContext, found: DiscoveryConfig) -> Source[Any] | None:
    from .sources.glow.config import GlowSourceConfig
    from .sources.glow.source import GlowSource

    config = GlowSourceConfig(type="glow", id="glow")
    if any(isinstance(s, GlowSourceConfig) and s.topic_prefix == config.topic_prefix for s in explicit):
        return None
    return GlowSource(config, context.mqtt, f"{context.client_id}-found-glow")


#: Every family the bridge looks for by default, by its `discovery` key.
DISCOVERED: dict[str, Callable[[Sequence[Any], MqttContext, DiscoveryConfig], Source[Any] | None]] = {
    "emu2": _emu2,
    "zigbee2mqtt": _zigbee2mqtt,
    "shelly": _shelly,
    "tasmota": _tasmota,
    "glow": _glow,
}


def discovered_sources(discovery: DiscoveryConfig, explicit: Sequence[Any], context: MqttContext) -> list[Source[Any]]:
    """The sources that look for each family `discovery` leaves on, minus what `explicit` already reads."""
    taken = {source.id for source in explicit}
    found: list[Source[Any]] = []
    for family, build in DISCOVERED.items():
        if not getattr(discovery, family):
            continue
        source = build(explicit, context, discovery)
        if source is None:
            continue
        if source.id in taken:
            _LOGGER.warning(
                "Not looking for %s devices: the source id %r is taken by a configured source", family, source.id
            )
            continue
        found.append(source)
    return found
