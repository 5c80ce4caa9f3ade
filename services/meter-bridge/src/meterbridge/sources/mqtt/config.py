"""Configuration of a `type: mqtt` source (generic JSON or plain numbers over MQTT), and its presets.

A meter's config becomes a `MeterPlan` (`MqttMeterConfig.plan`): the preset's topics and
quantities first, then the meter's own `values` (which replace a preset's quantity of the
same name). The presets follow the devices' published documentation:

- **Tasmota** (https://tasmota.github.io/docs/MQTT/ and /docs/Power-Monitoring/): telemetry
  every `TelePeriod` (default 300 s) on `tele/<topic>/SENSOR` with an `ENERGY` object (`Power`
  W, `Total` kWh, `Voltage` V, `Current` A, `Factor`); multi-channel meters send lists
  (`"Power":[52,5]`); the retained last will `tele/<topic>/LWT` is `Online`/`Offline`.
- **ESPHome** (https://esphome.io/components/mqtt.html): each sensor's state as a plain number
  on `<topic_prefix>/sensor/<object id>/state`; birth and last will `online`/`offline` on
  `<topic_prefix>/status`; `topic_prefix` defaults to the node name.
- **OpenEVSE** (openevse_esp32_firmware docs/mqtt.md, src/input.cpp `create_rapi_json`):
  every 30 s, one sub-topic of the base topic per status value: `amp` (mA), `voltage` (V),
  `total_energy` (kWh), `temp` (tenths of °C). It publishes no power.

Kept free of runtime imports so that the schema loads no transport.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from ...configbase import Identifier, SourceConfigBase, StrictModel
from ...model import Quantity
from .parser import Extract, MeterPlan, OnOff, check_unit, conversion, split_key

#: A topic we subscribe to literally: no wildcards, no empty levels at the ends.
_TOPIC = r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$"
#: A key path: keys separated by `.`; a number indexes a list (`ENERGY.Power.0`).
_KEY_PATH = re.compile(r"^[^.]+(\.[^.]+)*$")

Preset = Literal["tasmota", "esphome", "openevse"]


class MqttValueConfig(StrictModel):
    """One quantity of a meter: where it is published and how to read it."""

    quantity: Quantity = Field(description="What it measures (`power`, `energy_import`, `temperature`, ...).")
    topic: str | None = Field(default=None, pattern=_TOPIC, description="Topic (default: the meter's `state_topic`).")
    key: str | None = Field(
        default=None,
        description="Key path in the JSON payload (`ENERGY.Power`, a number indexes a list: `ENERGY.Power.1`); "
        "none: the payload is a plain number.",
    )
    unit: str | None = Field(
        default=None,
        description="Unit the device sends (`kW`, `Wh`, `mA`, `°F`...), converted to the quantity's own "
        "(default: already in it).",
    )
    scale: float = Field(default=1.0, description="Factor applied after the unit conversion (`0.1` for tenths).")
    offset: float = Field(default=0.0, description="Added last (with `scale`, a linear map such as a dimmer's).")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_PATH.match(value):
            raise ValueError("must be keys separated by single dots, e.g. ENERGY.Power")
        return value

    @model_validator(mode="after")
    def _unit(self) -> Self:
        if self.unit is not None:
            check_unit(self.quantity, self.unit)
        return self


class MqttOnOffConfig(StrictModel):
    """SenseLink's on/off model: a state topic says on or off, and each has a fixed power."""

    topic: str = Field(pattern=_TOPIC, description="Topic carrying the on/off state.")
    key: str | None = Field(default=None, description="Key path of the state in a JSON payload (none: the payload).")
    on_w: float = Field(description="Power while on (W).")
    off_w: float = Field(default=0.0, description="Power while off (W): a standby load.")
    on_values: list[str] = Field(default=["on", "ON", "true", "1"], min_length=1, description="Payloads meaning on.")
    off_values: list[str] = Field(
        default=["off", "OFF", "false", "0"], min_length=1, description="Payloads meaning off."
    )

    @model_validator(mode="after")
    def _disjoint(self) -> Self:
        both = set(self.on_values) & set(self.off_values)
        if both:
            raise ValueError(f"values both on and off: {sorted(both)}")
        if self.key is not None and not _KEY_PATH.match(self.key):
            raise ValueError("key must be keys separated by single dots")
        return self


class MqttMeterConfig(StrictModel):
    """One meter read from MQTT: a preset, or a state topic with a key path per quantity, or both."""

    id: Identifier = Field(description="Meter id.")
    name: str | None = Field(default=None, description="Name shown in Home Assistant (default: the id).")
    preset: Preset | None = Field(
        default=None,
        description="`tasmota` (`tele/<device>/SENSOR` ENERGY, LWT), `esphome` (`<device>/sensor/<name>/state`, "
        "`<device>/status`) or `openevse` (`<device>/amp`, `voltage`, `total_energy`, `temp`).",
    )
    device: str | None = Field(
        default=None,
        pattern=_TOPIC,
        description="For a preset: Tasmota's `%topic%`, ESPHome's `topic_prefix` (its node name) or OpenEVSE's "
        "base topic.",
    )
    channel: int | None = Field(default=None, ge=0, description="`tasmota`: channel of a multi-channel meter (0, 1).")
    sensors: dict[Quantity, str] = Field(
        default_factory=dict,
        description="`esphome`: the sensor object id (`<device>/sensor/<id>/state`) of each quantity.",
    )
    state_topic: str | None = Field(default=None, pattern=_TOPIC, description="Default topic of `values`.")
    values: list[MqttValueConfig] = Field(
        default_factory=list, description="Quantities to read (beside, or replacing, a preset's)."
    )
    availability_topic: str | None = Field(
        default=None, pattern=_TOPIC, description="Topic saying whether the device is online (a preset sets it)."
    )
    payload_available: str | None = Field(default=None, description="Online payload (default `online`).")
    payload_not_available: str | None = Field(default=None, description="Offline payload (default `offline`).")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Unavailable after this long without a reading (a preset sets one from the device's interval).",
    )
    on_off: MqttOnOffConfig | None = Field(default=None, description="Power from an on/off state (SenseLink).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.preset is not None and self.device is None:
            raise ValueError(f"preset {self.preset} needs `device`")
        if self.preset is None and (self.device is not None or self.channel is not None or self.sensors):
            raise ValueError("device, channel and sensors belong to a preset: set `preset`")
        if self.preset is None and not self.values and self.on_off is None:
            raise ValueError("nothing to read: set values, on_off or a preset")
        if self.preset == "esphome" and not self.sensors and not self.values:
            raise ValueError("esphome: name the sensor of each quantity in `sensors`")
        for value in self.values:
            if value.topic is None and self.state_topic is None:
                raise ValueError(f"{value.quantity.value}: no topic (set its `topic` or the meter's `state_topic`)")
        if self.on_off is not None and any(v.quantity is Quantity.POWER for v in self.values):
            raise ValueError("power comes from on_off: do not also list it in values")
        return self

    @property
    def display_name(self) -> str:
        """Its name, or its id made readable."""
        return self.name or self.id.replace("_", " ").capitalize()

    def plan(self) -> MeterPlan:
        """What to subscribe to and how to read it: the preset's plan, then the meter's own settings."""
        base = _PRESETS[self.preset](self) if self.preset is not None else MeterPlan(self.id)
        topics: dict[str, list[Extract]] = {topic: list(extracts) for topic, extracts in base.topics.items()}
        own = {value.quantity for value in self.values}
        if self.on_off is not None:
            own.add(Quantity.POWER)
        for extracts in topics.values():
            extracts[:] = [e for e in extracts if e.quantity not in own]
        for value in self.values:
            topic = value.topic or self.state_topic
            assert topic is not None  # noqa: S101 - checked by the validator
            factor, offset = conversion(value.quantity, value.unit, value.scale)
            extract = Extract(value.quantity, split_key(value.key), factor, offset + value.offset)
            topics.setdefault(topic, []).append(extract)
        on_off = None
        if self.on_off is not None:
            c = self.on_off
            on_off = OnOff(c.topic, split_key(c.key), c.on_w, c.off_w, frozenset(c.on_values), frozenset(c.off_values))
        return MeterPlan(
            meter_id=self.id,
            topics={topic: tuple(extracts) for topic, extracts in topics.items() if extracts},
            on_off=on_off,
            availability_topic=self.availability_topic or base.availability_topic,
            payload_available=self.payload_available or base.payload_available,
            payload_not_available=self.payload_not_available or base.payload_not_available,
            timeout_s=self.timeout_s if self.timeout_s is not None else base.timeout_s,
        )


#: Tasmota's default TelePeriod is 300 s: two missed telemetry messages make the meter unavailable.
TASMOTA_TIMEOUT_S = 660.0
#: OpenEVSE publishes every 30 s (docs/mqtt.md).
OPENEVSE_TIMEOUT_S = 90.0


def _tasmota(meter: MqttMeterConfig) -> MeterPlan:
    item = meter.channel
    keys = (
        ("Power", Quantity.POWER),
        ("Total", Quantity.ENERGY_IMPORT),
        ("Voltage", Quantity.VOLTAGE),
        ("Current", Quantity.CURRENT),
        ("Factor", Quantity.POWER_FACTOR),
    )
    extracts = tuple(Extract(quantity, ("ENERGY", key), item=item) for key, quantity in keys)
    return MeterPlan(
        meter.id,
        {f"tele/{meter.device}/SENSOR": extracts},
        availability_topic=f"tele/{meter.device}/LWT",
        payload_available="Online",
        payload_not_available="Offline",
        timeout_s=TASMOTA_TIMEOUT_S,
    )


def _esphome(meter: MqttMeterConfig) -> MeterPlan:
    topics = {
        f"{meter.device}/sensor/{object_id}/state": (Extract(quantity),)
        for quantity, object_id in meter.sensors.items()
    }
    return MeterPlan(meter.id, topics, availability_topic=f"{meter.device}/status")


def _openevse(meter: MqttMeterConfig) -> MeterPlan:
    base = meter.device
    return MeterPlan(
        meter.id,
        {
            f"{base}/amp": (Extract(Quantity.CURRENT, factor=0.001),),  # AMPS_SCALE_FACTOR 1000
            f"{base}/voltage": (Extract(Quantity.VOLTAGE),),
            f"{base}/total_energy": (Extract(Quantity.ENERGY_IMPORT),),
            f"{base}/temp": (Extract(Quantity.TEMPERATURE, factor=0.1),),  # TEMP_SCALE_FACTOR 10
        },
        timeout_s=OPENEVSE_TIMEOUT_S,
    )


_PRESETS = {"tasmota": _tasmota, "esphome": _esphome, "openevse": _openevse}


class MqttSourceConfig(SourceConfigBase):
    """`type: mqtt`: meters and sensors that publish JSON or plain numbers on the bridge's broker."""

    type: Literal["mqtt"] = Field(description="Source family.")
    meters: list[MqttMeterConfig] = Field(min_length=1, description="The meters.")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for meter in self.meters:
            if meter.id in seen:
                raise ValueError(f"duplicate meter id {meter.id!r}")
            seen.add(meter.id)
        return self
