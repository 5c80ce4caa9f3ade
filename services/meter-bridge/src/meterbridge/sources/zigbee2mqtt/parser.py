"""Pure parsing of Zigbee2MQTT's MQTT API (https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html).

- `<base>/bridge/devices` (retained): a JSON list of devices, each with `ieee_address`,
  `friendly_name`, `type`, `disabled` and a `definition` (`vendor`, `model`,
  `description`, `exposes`). `parse_devices` turns it into `Z2mDevice`s with the
  numeric properties each exposes and their units.
- `<base>/<friendly_name>`: the device state, a JSON object (`power` W,
  `energy`/`produced_energy` kWh, `voltage` V, `current` A, and on room sensors
  `temperature` °C, `humidity` %, `co2` ppm, among others).
  `parse_state` maps those to readings, scaled by the unit the device exposes.
- `<base>/<friendly_name>/availability`: `{"state": "online"}` (Zigbee2MQTT 2.x) or the
  legacy plain `online`/`offline`. `parse_availability`.
- Friendly names may contain `/`, so a topic cannot be split on `/`: `DeviceTable`
  maps topics back to devices by exact lookup in the names it was given.

Nothing here logs or does I/O; every function raises only `ParseError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ...errors import ParseError
from ...model import Quantity
from ..jsonpayload import ParseOutcome, load_json, load_object

#: Device state keys we read, and what they measure.
PROPERTIES: dict[str, Quantity] = {
    "power": Quantity.POWER,
    "energy": Quantity.ENERGY_IMPORT,
    "produced_energy": Quantity.ENERGY_EXPORT,
    "voltage": Quantity.VOLTAGE,
    "current": Quantity.CURRENT,
    "temperature": Quantity.TEMPERATURE,
    "humidity": Quantity.HUMIDITY,
    "co2": Quantity.CO2,
}

#: A device is a meter when it exposes one of these.
METERING_PROPERTIES = frozenset({"power", "energy", "produced_energy"})
#: ... and a room sensor (retrofit evaluation, issue 20) when it exposes one of these.
ENVIRONMENT_PROPERTIES = frozenset({"temperature", "humidity", "co2"})

#: Factor from an exposed unit to our unit. Zigbee2MQTT's converters normalise to these
#: units, but a few external converters expose others; an unknown unit is not guessed.
_SCALES: dict[Quantity, dict[str, float]] = {
    Quantity.POWER: {"W": 1.0, "kW": 1000.0},
    Quantity.ENERGY_IMPORT: {"kWh": 1.0, "Wh": 0.001},
    Quantity.ENERGY_EXPORT: {"kWh": 1.0, "Wh": 0.001},
    Quantity.VOLTAGE: {"V": 1.0, "mV": 0.001},
    Quantity.CURRENT: {"A": 1.0, "mA": 0.001},
    Quantity.TEMPERATURE: {"°C": 1.0},
    Quantity.HUMIDITY: {"%": 1.0},
    Quantity.CO2: {"ppm": 1.0},
}

_DEFAULT_UNITS: dict[Quantity, str] = {
    Quantity.POWER: "W",
    Quantity.ENERGY_IMPORT: "kWh",
    Quantity.ENERGY_EXPORT: "kWh",
    Quantity.VOLTAGE: "V",
    Quantity.CURRENT: "A",
    Quantity.TEMPERATURE: "°C",
    Quantity.HUMIDITY: "%",
    Quantity.CO2: "ppm",
}

#: Read only from devices that meter power: on a battery sensor these describe the battery.
_ELECTRICAL = frozenset({"voltage", "current"})

#: MQTT wildcards cannot be subscribed to literally; Zigbee2MQTT refuses them in names too.
_WILDCARDS = re.compile(r"[#+]")


@dataclass(frozen=True, slots=True)
class Z2mDevice:
    """One device from `bridge/devices`. `units` maps each numeric property it exposes to its unit (or None)."""

    ieee_address: str
    friendly_name: str
    device_type: str = "Unknown"
    disabled: bool = False
    vendor: str | None = None
    model: str | None = None
    description: str | None = None
    software_build_id: str | None = None
    units: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def is_meter(self) -> bool:
        """Whether the device exposes power or energy."""
        return bool(METERING_PROPERTIES & set(self.units))

    @property
    def is_room_sensor(self) -> bool:
        """Whether the device exposes temperature, humidity or CO2."""
        return bool(ENVIRONMENT_PROPERTIES & set(self.units))


@dataclass(frozen=True, slots=True)
class DevicesOutcome:
    """The devices of a `bridge/devices` message, and why any entry in it was skipped."""

    devices: list[Z2mDevice]
    skipped: list[str]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _walk_exposes(exposes: object) -> Iterator[dict[str, Any]]:
    """Every expose and nested feature (composites, switches, lights nest theirs in `features`)."""
    if not isinstance(exposes, list):
        return
    for expose in exposes:
        if isinstance(expose, dict):
            yield expose
            yield from _walk_exposes(expose.get("features"))


def _numeric_units(exposes: object) -> dict[str, str | None]:
    units: dict[str, str | None] = {}
    for expose in _walk_exposes(exposes):
        prop = expose.get("property")
        if expose.get("type") == "numeric" and isinstance(prop, str):
            units[prop] = _text(expose.get("unit"))
    return units


def parse_devices(payload: bytes | str) -> DevicesOutcome:
    """Parse a `bridge/devices` message; `ParseError` unless it is a JSON list.

    Entries without an `ieee_address` or `friendly_name` string are skipped (and named
    in `skipped`), so one odd entry never hides the other devices.
    """
    data = load_json(payload)
    if not isinstance(data, list):
        raise ParseError(f"bridge/devices: expected a JSON list, got {type(data).__name__}")
    devices: list[Z2mDevice] = []
    skipped: list[str] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            skipped.append(f"entry {index}: not an object")
            continue
        ieee, name = _text(entry.get("ieee_address")), _text(entry.get("friendly_name"))
        if ieee is None or name is None:
            skipped.append(f"entry {index}: no ieee_address or friendly_name")
            continue
        definition = entry.get("definition")
        definition = definition if isinstance(definition, dict) else {}
        devices.append(
            Z2mDevice(
                ieee_address=ieee,
                friendly_name=name,
                device_type=_text(entry.get("type")) or "Unknown",
                disabled=entry.get("disabled") is True,
                vendor=_text(definition.get("vendor")) or _text(entry.get("manufacturer")),
                model=_text(definition.get("model")) or _text(entry.get("model_id")),
                description=_text(definition.get("description")),
                software_build_id=_text(entry.get("software_build_id")),
                units=_numeric_units(definition.get("exposes")),
            )
        )
    return DevicesOutcome(devices, skipped)


def parse_availability(payload: bytes | str) -> bool:
    """`True` for online, `False` for offline; `ParseError` for anything else.

    Accepts `{"state": "online"}` and the legacy plain `online`/`offline`.
    """
    raw = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    state: object = raw.strip()
    if raw.lstrip().startswith("{"):
        state = load_object(payload).get("state")
    if state == "online":
        return True
    if state == "offline":
        return False
    raise ParseError(f"availability: unknown state {str(state)[:40]!r}")


def parse_state(payload: bytes | str, meter_id: str, units: Mapping[str, str | None], ts: datetime) -> ParseOutcome:
    """Readings from a device state message; `ParseError` unless it is a JSON object.

    `units` are the device's exposed units (a property not exposed is taken in its
    usual Zigbee2MQTT unit). A value that is not a number, is in a unit we do not know,
    or is a negative total is dropped and named in `dropped`; keys we do not map are
    ignored. A device that exposes units but no power or energy is a sensor: its
    `voltage` is its battery's (Aqara WSDCGQ11LM: mV) and is not read as a mains voltage.
    """
    data = load_object(payload)
    outcome = ParseOutcome()
    electrical = not units or bool(METERING_PROPERTIES & set(units))
    for prop, quantity in PROPERTIES.items():
        if prop not in data or data[prop] is None:
            continue  # absent, or not reported yet (Zigbee2MQTT sends null then)
        if not electrical and prop in _ELECTRICAL:
            continue
        unit = units.get(prop) or _DEFAULT_UNITS[quantity]
        outcome.add(prop, data[prop], (meter_id, quantity, ts), unit, _SCALES[quantity])
    return outcome


# -- topics -------------------------------------------------------------------------------------

TopicKind = Literal["state", "availability"]


@dataclass(frozen=True, slots=True)
class TableChange:
    """What changed in the device table: topics to (un)subscribe, meters added, removed or renamed."""

    subscribe: list[str] = field(default_factory=list)
    unsubscribe: list[str] = field(default_factory=list)
    added: list[Z2mDevice] = field(default_factory=list)
    removed: list[Z2mDevice] = field(default_factory=list)
    renamed: list[tuple[Z2mDevice, Z2mDevice]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def default_meter_id(source_id: str, ieee_address: str) -> str:
    """`<source id>_<IEEE address in lower-case hex, no 0x>`: stable across renames."""
    hex_part = re.sub(r"[^0-9a-z]", "", ieee_address.lower().removeprefix("0x"))
    return f"{source_id}_{hex_part}"


class DeviceTable:
    """The devices a source reads, keyed by IEEE address, and the topic of each.

    `selected` (friendly names or IEEE addresses) restricts the table to those devices;
    without it every enabled device that exposes power, energy, temperature, humidity or CO2
    is read.
    `meter_ids` overrides the meter id of a device (keyed by name or IEEE address).
    """

    def __init__(
        self,
        source_id: str,
        base_topic: str,
        selected: Iterable[str] | None = None,
        meter_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.source_id = source_id
        self.base_topic = base_topic
        self.selected = None if selected is None else frozenset(selected)
        self.meter_ids = dict(meter_ids or {})
        self.devices: dict[str, Z2mDevice] = {}
        self._topics: dict[str, tuple[str, TopicKind]] = {}

    @property
    def devices_topic(self) -> str:
        """The retained device list."""
        return f"{self.base_topic}/bridge/devices"

    def topics_of(self, device: Z2mDevice) -> list[str]:
        """The state and availability topics of a device."""
        state = f"{self.base_topic}/{device.friendly_name}"
        return [state, f"{state}/availability"]

    def meter_id(self, device: Z2mDevice) -> str:
        """The meter id of a device: configured by name or IEEE address, else the default."""
        return (
            self.meter_ids.get(device.ieee_address)
            or self.meter_ids.get(device.friendly_name)
            or default_meter_id(self.source_id, device.ieee_address)
        )

    def wanted(self, device: Z2mDevice) -> bool:
        """Whether the source reads this device."""
        if self.selected is not None:
            return device.friendly_name in self.selected or device.ieee_address in self.selected
        wanted = device.is_meter or device.is_room_sensor
        return wanted and not device.disabled and device.device_type != "Coordinator"

    def update(self, devices: Iterable[Z2mDevice]) -> TableChange:
        """Replace the table with the wanted ones of `devices`; what to (un)subscribe and announce."""
        change = TableChange()
        new: dict[str, Z2mDevice] = {}
        for device in devices:
            if not self.wanted(device):
                continue
            if _WILDCARDS.search(device.friendly_name):
                change.skipped.append(f"{device.friendly_name!r}: MQTT wildcard in the friendly name")
                continue
            new[device.ieee_address] = device
        for ieee, old in self.devices.items():
            current = new.get(ieee)
            if current is None or self.meter_id(current) != self.meter_id(old):
                change.removed.append(old)
        for ieee, device in new.items():
            old_device = self.devices.get(ieee)
            if old_device is None or self.meter_id(old_device) != self.meter_id(device):
                change.added.append(device)
            elif old_device.friendly_name != device.friendly_name:
                change.renamed.append((old_device, device))
            elif old_device != device:
                change.added.append(device)  # same name, new details (re-interviewed): describe again
        old_topics = set(self._topics)
        self.devices = new
        self._topics = {}
        for ieee, device in new.items():
            state, availability = self.topics_of(device)
            self._topics[state] = (ieee, "state")
            self._topics[availability] = (ieee, "availability")
        change.subscribe.extend(sorted(set(self._topics) - old_topics))
        change.unsubscribe.extend(sorted(old_topics - set(self._topics)))
        return change

    def route(self, topic: str) -> tuple[Z2mDevice, TopicKind] | None:
        """The device and kind of message a topic carries, or None for a topic not in the table."""
        entry = self._topics.get(topic)
        if entry is None:
            return None
        return self.devices[entry[0]], entry[1]
