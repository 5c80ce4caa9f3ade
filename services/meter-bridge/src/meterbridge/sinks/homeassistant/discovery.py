"""Pure builders of Home Assistant MQTT discovery messages and state payloads.

One discovery config per (meter, quantity): `<prefix>/sensor/hems/hems_<id>_<quantity>/config`,
one HA device per meter, availability = bridge AND meter. Per-entity discovery (not
the device-based `cmps` form of 2024.11+) so that Home Assistant 2024.3 and current
releases both accept it.

Two state topics per meter (SD-card wear, docs/benchmarks.md): the live one
(`hems/meter/<id>`, every reading) and the recorded one (`hems/meter/<id>/recorded`, once per
clock step). Totals read the recorded topic: HA's recorder stores a row per state change, and the
Energy dashboard's statistics need only the total at each 5-minute boundary. Power reads the live
topic (HA's recorder leaves it out, ha-config/packages/hems.yaml); its recorded companion
`sensor.hems_<id>_power_average` (the step's time-weighted mean) is what history and the Energy
dashboard's power charts use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...ha_entities import Device, EntityDescription, discovery_config
from ...ha_topics import DISCOVERY_NODE_ID, ORIGIN, Topics
from ...model import MeterDescription, Quantity

__all__ = [
    "AVERAGED",
    "DISCOVERY_NODE_ID",
    "ENTITY_DESCRIPTIONS",
    "ORIGIN",
    "RECORDED_STATE_CLASSES",
    "QuantityEntity",
    "Topics",
    "average_discovery_message",
    "average_entity",
    "discovery_message",
    "meter_entity",
    "state_payload",
]


@dataclass(frozen=True, slots=True)
class QuantityEntity:
    """How one quantity appears in Home Assistant (a sensor entity description)."""

    name: str
    device_class: str | None
    state_class: str | None
    unit: str | None
    precision: int
    icon: str | None = None
    #: `diagnostic` for figures about the link rather than the energy (HA hides them by default).
    entity_category: str | None = None
    #: The state's template when the JSON value is not the state itself (default: the value).
    value_template: str | None = None
    #: For a `total` sensor whose count restarts: the template of HA's `last_reset`.
    last_reset_value_template: str | None = None


#: The period's start (a Unix time in the state JSON) as the datetime HA wants; empty (HA
#: ignores it) while the meter has not reported one.
_PERIOD_START = "{{ as_datetime(value_json.energy_period_start) if value_json.energy_period_start is defined else '' }}"


#: Energy totals are `total_increasing` in kWh and power is W `measurement`: what the
#: Energy dashboard requires. Monetary sensors may not have state_class measurement.
ENTITY_DESCRIPTIONS: dict[Quantity, QuantityEntity] = {
    Quantity.POWER: QuantityEntity("Power", "power", "measurement", "W", 0),
    Quantity.ENERGY_IMPORT: QuantityEntity("Energy import", "energy", "total_increasing", "kWh", 3),
    Quantity.ENERGY_EXPORT: QuantityEntity("Energy export", "energy", "total_increasing", "kWh", 3),
    Quantity.VOLTAGE: QuantityEntity("Voltage", "voltage", "measurement", "V", 1),
    Quantity.CURRENT: QuantityEntity("Current", "current", "measurement", "A", 2),
    Quantity.FREQUENCY: QuantityEntity("Frequency", "frequency", "measurement", "Hz", 2),
    Quantity.POWER_FACTOR: QuantityEntity("Power factor", "power_factor", "measurement", None, 2),
    Quantity.PRICE: QuantityEntity("Price", "monetary", None, "{currency}/kWh", 4, "mdi:cash"),
    # A kWh gas meter is an `energy` sensor: HA's `gas` device class only takes volumes
    # (m³, ft³, CCF), and the Energy dashboard's gas source accepts device classes
    # `energy` (Wh/kWh/MWh/GJ...) and `gas` (volumes), in 2024.3 and in current releases
    # alike (homeassistant/components/energy/validate.py, GAS_USAGE_DEVICE_CLASSES and
    # GAS_USAGE_UNITS).
    Quantity.GAS_ENERGY: QuantityEntity("Gas energy", "energy", "total_increasing", "kWh", 3, "mdi:fire"),
    Quantity.STANDING_CHARGE: QuantityEntity("Standing charge", "monetary", None, "{currency}/day", 4, "mdi:cash"),
    Quantity.LINK_QUALITY: QuantityEntity("Link quality", None, "measurement", "%", 0, "mdi:signal", "diagnostic"),
    # The EMU-2's period usage counts from the start of a period the user (or utility) sets and
    # starts again when it is closed: HA's `total` with `last_reset` is that (sensor docs: "a
    # total amount that can increase and decrease ... last_reset: when it was initialized");
    # `total_increasing` would read a net-export decrease as a reset.
    Quantity.ENERGY_PERIOD: QuantityEntity(
        "Energy this period", "energy", "total", "kWh", 3, last_reset_value_template=_PERIOD_START
    ),
    Quantity.ENERGY_PERIOD_START: QuantityEntity(
        "Period start", "timestamp", None, None, 0, "mdi:calendar-start", "diagnostic", _PERIOD_START
    ),
    # A closed period's figure, not a running total: no state class, so no statistics that
    # would count it again on top of the period and lifetime totals.
    Quantity.ENERGY_LAST_PERIOD: QuantityEntity("Energy last period", "energy", None, "kWh", 3),
    # Environment (retrofit evaluation). Device classes and units as HA's sensor component
    # accepts them (`temperature` °C, `humidity` %, `carbon_dioxide` ppm); heat energy is an
    # `energy` total like the others, but nothing puts it on the Energy dashboard's grid.
    Quantity.TEMPERATURE: QuantityEntity("Temperature", "temperature", "measurement", "°C", 1),
    Quantity.HUMIDITY: QuantityEntity("Humidity", "humidity", "measurement", "%", 0),
    Quantity.CO2: QuantityEntity("CO2", "carbon_dioxide", "measurement", "ppm", 0),
    Quantity.FLOW_TEMPERATURE: QuantityEntity(
        "Flow temperature", "temperature", "measurement", "°C", 1, "mdi:thermometer-chevron-up"
    ),
    Quantity.RETURN_TEMPERATURE: QuantityEntity(
        "Return temperature", "temperature", "measurement", "°C", 1, "mdi:thermometer-chevron-down"
    ),
    Quantity.HEAT_ENERGY: QuantityEntity("Heat energy", "energy", "total_increasing", "kWh", 3, "mdi:radiator"),
    Quantity.HEAT_POWER: QuantityEntity("Heat power", "power", "measurement", "W", 0, "mdi:radiator"),
}


#: Quantities HA reads from the recorded topic: the counters that grow at every reading, whose
#: statistics are compiled from the state at each 5-minute boundary (any step that divides 5
#: minutes keeps them exact). A `total` (the EMU-2's period usage) stays live: it is polled
#: (`period_interval_s`), and its value and its `last_reset` must come in the same message.
RECORDED_STATE_CLASSES = frozenset({"total_increasing"})

#: Quantities that change at every reading and get a recorded companion: their time-weighted mean
#: over the step, key `<quantity>_average` in the recorded state, entity `..._<quantity>_average`.
AVERAGED: tuple[Quantity, ...] = (Quantity.POWER, Quantity.HEAT_POWER)


def meter_entity(
    topics: Topics, meter: MeterDescription, quantity: Quantity, currency: str = "GBP"
) -> EntityDescription:
    """The sensor of one quantity of one meter, on the meter's device; available when the bridge and the meter are."""
    entity = ENTITY_DESCRIPTIONS[quantity]
    recorded = entity.state_class in RECORDED_STATE_CLASSES
    return EntityDescription(
        "sensor",
        f"{meter.meter_id}_{quantity.value}",
        entity.name,
        Device.of_meter(meter),
        state_topic=topics.meter_recorded(meter.meter_id) if recorded else topics.meter_state(meter.meter_id),
        value_template=entity.value_template or f"{{{{ value_json.{quantity.value} }}}}",
        availability=(topics.meter_availability(meter.meter_id),),
        device_class=entity.device_class,
        state_class=entity.state_class,
        unit=entity.unit.format(currency=currency) if entity.unit else None,
        icon=entity.icon,
        entity_category=entity.entity_category,
        # HA refuses a display precision on a non-numeric sensor
        precision=None if entity.device_class == "timestamp" else entity.precision,
        extra=(
            (("last_reset_value_template", entity.last_reset_value_template),)
            if entity.last_reset_value_template
            else ()
        ),
    )


def average_entity(topics: Topics, meter: MeterDescription, quantity: Quantity) -> EntityDescription:
    """The recorded companion of a live `quantity` (one of AVERAGED): its mean over each step."""
    entity = ENTITY_DESCRIPTIONS[quantity]
    key = f"{quantity.value}_average"
    return EntityDescription(
        "sensor",
        f"{meter.meter_id}_{key}",
        f"{entity.name} (average)",
        Device.of_meter(meter),
        state_topic=topics.meter_recorded(meter.meter_id),
        value_template=f"{{{{ value_json.{key} }}}}",
        availability=(topics.meter_availability(meter.meter_id),),
        device_class=entity.device_class,
        state_class=entity.state_class,
        unit=entity.unit,
        icon=entity.icon,
        precision=entity.precision,
    )


def discovery_message(
    topics: Topics, site_id: str, meter: MeterDescription, quantity: Quantity, currency: str = "GBP"
) -> tuple[str, dict[str, Any]]:
    """Topic and payload of the discovery config of one quantity of one meter."""
    return discovery_config(meter_entity(topics, meter, quantity, currency), topics, site_id)


def average_discovery_message(
    topics: Topics, site_id: str, meter: MeterDescription, quantity: Quantity
) -> tuple[str, dict[str, Any]]:
    """Topic and payload of the discovery config of one recorded companion (`..._power_average`)."""
    return discovery_config(average_entity(topics, meter, quantity), topics, site_id)


def state_payload(
    values: dict[Quantity, float], ts: datetime | None, averages: dict[Quantity, float] | None = None
) -> bytes:
    """The retained JSON state of a meter: `{"power": 512.0, ..., "ts": "...+00:00"}`.

    The recorded state is the same body plus `<quantity>_average` for each of `averages`.
    """
    body: dict[str, Any] = {quantity.value: value for quantity, value in values.items()}
    for quantity, mean in (averages or {}).items():
        body[f"{quantity.value}_average"] = mean
    if ts is not None:
        body["ts"] = ts.isoformat()
    return json.dumps(body, separators=(",", ":")).encode()
