"""Home Assistant entities as data, and the one catalog the Home Assistant sink announces from.

Sources and flex *describe* the entities they offer (`EntityDescription`: frozen data, like the
entity descriptions of HA's own integrations) and put them in the bridge's `EntityCatalog`
under an owner name; the Home Assistant sink is the only part that turns descriptions into MQTT
discovery configs (`discovery_config`), publishes them, re-announces them all when HA sends
`online` on `homeassistant/status`, and removes (empty retained config) what an owner no
longer describes. Meter sensors are described the same way by the sink itself
(`sinks/homeassistant/discovery.py`), from the meters the hub brings.

The site id is the sink's to add: unique ids are `hems_<site>_<key>` and device identifiers
`hems_<site>_<device key>`, so a describer never needs the site.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .ha_topics import ORIGIN, Topics, entity_id_keys
from .model import MeterDescription


@dataclass(frozen=True, slots=True)
class Device:
    """The HA device an entity belongs to; `key` makes its identifier `hems_<site>_<key>`."""

    key: str
    name: str
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    hw_version: str | None = None
    #: The `key` of the device this one is reached through (a meter behind a hub).
    via: str | None = None

    @classmethod
    def of_meter(cls, meter: MeterDescription) -> Device:
        """A meter's device: one HA device per meter."""
        return cls(
            meter.meter_id, meter.name, meter.manufacturer, meter.model, meter.sw_version, meter.hw_version, meter.via
        )

    def block(self, site_id: str) -> dict[str, Any]:
        """The discovery `device` block."""
        device: dict[str, Any] = {"identifiers": [f"hems_{site_id}_{self.key}"], "name": self.name}
        for key, value in (
            ("manufacturer", self.manufacturer),
            ("model", self.model),
            ("sw_version", self.sw_version),
            ("hw_version", self.hw_version),
        ):
            if value:
                device[key] = value
        if self.via:
            device["via_device"] = f"hems_{site_id}_{self.via}"
        return device


@dataclass(frozen=True, slots=True)
class EntityDescription:
    """One entity as Home Assistant should see it.

    Its id is `<component>.hems_<key>`; its unique id `hems_<site>_<key>` (or
    `hems_<site>_<unique_key>` where a released entity has another, see flex). Availability is
    the bridge's, AND each topic of `availability` when there are any.
    """

    component: str
    key: str
    name: str
    device: Device
    state_topic: str | None = None
    value_template: str | None = None
    command_topic: str | None = None
    availability: tuple[str, ...] = ()
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    icon: str | None = None
    entity_category: str | None = None
    precision: int | None = None
    #: Further discovery keys (`payload_on`, `options`, `json_attributes_topic`, ...), in order.
    extra: tuple[tuple[str, Any], ...] = ()
    #: The unique id's part after `hems_<site>_`, when it is not `key` (ids never change once released).
    unique_key: str | None = None

    @property
    def object_id(self) -> str:
        """The entity id without its domain, and the last level of the discovery topic."""
        return f"hems_{self.key}"


def unique_id(entity: EntityDescription, site_id: str) -> str:
    """The entity's unique id in Home Assistant (`hems_<site>_<key>`)."""
    return f"hems_{site_id}_{entity.unique_key or entity.key}"


def discovery_config(entity: EntityDescription, topics: Topics, site_id: str) -> tuple[str, dict[str, Any]]:
    """Topic and payload of `entity`'s discovery config: the one contract every entity follows."""
    payload: dict[str, Any] = {
        "name": entity.name,
        "unique_id": unique_id(entity, site_id),
        **entity_id_keys(entity.component, entity.object_id),
    }
    if entity.state_topic is not None:
        payload["state_topic"] = entity.state_topic
    if entity.value_template is not None:
        payload["value_template"] = entity.value_template
    if entity.command_topic is not None:
        payload["command_topic"] = entity.command_topic
    if entity.availability:
        payload["availability"] = [{"topic": topic} for topic in (topics.bridge_availability, *entity.availability)]
        payload["availability_mode"] = "all"
    else:
        payload["availability_topic"] = topics.bridge_availability
    for key, value in (
        ("suggested_display_precision", entity.precision),
        ("device_class", entity.device_class),
        ("state_class", entity.state_class),
        ("unit_of_measurement", entity.unit),
        ("icon", entity.icon),
        ("entity_category", entity.entity_category),
    ):
        if value is not None:
            payload[key] = value
    payload["device"] = entity.device.block(site_id)
    payload["origin"] = dict(ORIGIN)
    for key, value in entity.extra:
        payload[key] = list(value) if isinstance(value, tuple) else value
    return topics.discovery(entity.component, entity.object_id), payload


class EntityCatalog:
    """The entities every part of the bridge offers Home Assistant, by owner.

    `describe(owner, entities)` replaces what `owner` offered before: an entity left out is
    removed from HA. Listeners (the HA sink) are told of every change; nothing here does I/O.
    """

    def __init__(self) -> None:
        self._owners: dict[str, tuple[EntityDescription, ...]] = {}
        self._states: dict[str, bytes] = {}
        self._device_names: dict[str, str] = {}
        self._listeners: list[Callable[[], None]] = []

    def name_device(self, key: str, name: str | None) -> None:
        """The name the householder gave the device `key` (a meter's id) in HA (None: its own name).

        The HA sink announces the meter's sensors with it: HA renames a device when discovery
        says so (a name the householder set on the device page itself still wins there)."""
        if self._device_names.get(key) == name:
            return
        if name is None:
            del self._device_names[key]
        else:
            self._device_names[key] = name
        self._changed()

    def device_name(self, key: str) -> str | None:
        """The name given to device `key` with `name_device`, if any."""
        return self._device_names.get(key)

    def set_state(self, topic: str, payload: bytes) -> None:
        """The retained state some described entities read (their `state_topic`), for owners with
        no MQTT connection of their own: the HA sink publishes it on its connection, and again
        after every reconnect."""
        if self._states.get(topic) == payload:
            return
        self._states[topic] = payload
        self._changed()

    def states(self) -> dict[str, bytes]:
        """Every state set with `set_state`, by topic."""
        return dict(self._states)

    def describe(self, owner: str, entities: Iterable[EntityDescription]) -> None:
        """What `owner` offers now (all of it; an empty list removes everything it offered)."""
        described = tuple(entities)
        if self._owners.get(owner, ()) == described:
            return
        self._owners[owner] = described
        self._changed()

    def entities(self) -> list[EntityDescription]:
        """Every entity offered, owner by owner in the order they first described."""
        return [entity for entities in self._owners.values() for entity in entities]

    def of(self, owner: str) -> tuple[EntityDescription, ...]:
        """What `owner` offers."""
        return self._owners.get(owner, ())

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` (synchronously, without arguments) after every change."""
        self._listeners.append(callback)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
