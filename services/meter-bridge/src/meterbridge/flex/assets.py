"""Controllable assets and how each one is switched (its actuator), as configuration."""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ..configbase import Identifier, StrictModel


class AssetKind(StrEnum):
    """What an asset is (shown in Home Assistant; `battery` and `ev_charger` can usually absorb)."""

    IMMERSION_HEATER = "immersion_heater"
    EV_CHARGER = "ev_charger"
    HEAT_PUMP = "heat_pump"
    BATTERY = "battery"
    GENERIC = "generic"


class ShellyActuatorConfig(StrictModel):
    """A Shelly Gen2+ relay channel, switched by `Switch.Set` over MQTT RPC (with `toggle_after` fail-safe)."""

    type: Literal["shelly"] = "shelly"
    prefix: str = Field(
        min_length=1, description="The device's MQTT topic prefix (e.g. `shelly/shellyplus1pm-a8032ab12345`)."
    )
    channel: int = Field(default=0, ge=0, le=3, description="The relay channel (`switch:<channel>`).")


class HomeAssistantActuatorConfig(StrictModel):
    """A Home Assistant entity (`switch.*`, `input_boolean.*`...) switched by websocket service calls.

    The fail-safe is whatever the entity's own device does: HA has no timed fallback.
    """

    type: Literal["homeassistant"] = "homeassistant"
    entity_id: str = Field(pattern=r"^[a-z_]+\.[a-z0-9_]+$", description="The entity to switch.")
    url: str = Field(
        default="ws://127.0.0.1:8123/api/websocket",
        description="HA's websocket URL (the bridge shares the host network with HA).",
    )
    token: SecretStr = Field(description="A long-lived access token (use `${HA_TOKEN}`).")


class MqttActuatorConfig(StrictModel):
    """A device switched by publishing to an MQTT command topic (e.g. Tasmota, Zigbee2MQTT).

    The fail-safe is the device's own (e.g. Tasmota `PulseTime`): the bridge cannot arm one.
    """

    type: Literal["mqtt"] = "mqtt"
    command_topic: str = Field(min_length=1, description="Where `payload_on`/`payload_off` are published.")
    state_topic: str | None = Field(default=None, description="Where the device reports its state (optional).")
    payload_on: str = Field(default="ON", description="Command payload to switch on.")
    payload_off: str = Field(default="OFF", description="Command payload to switch off.")
    retain: bool = Field(default=False, description="Publish commands retained.")


ActuatorConfig = Annotated[
    ShellyActuatorConfig | HomeAssistantActuatorConfig | MqttActuatorConfig, Field(discriminator="type")
]

_WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


def in_windows(windows: list[str], now: time) -> bool:
    """Whether `now` (local wall time) falls in one of `windows` (`HH:MM-HH:MM`, may wrap midnight).

    An empty list means always.
    """
    if not windows:
        return True
    for window in windows:
        start_s, end_s = window.split("-")
        start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
        if start <= end:
            if start <= now < end:
                return True
        elif now >= start or now < end:
            return True
    return False


class AssetConfig(StrictModel):
    """One controllable load. Times in seconds, power in W."""

    id: Identifier = Field(description="Unique asset id (in topics and entity ids).")
    name: str | None = Field(default=None, description="Name shown in Home Assistant (default: the id).")
    kind: AssetKind = Field(default=AssetKind.GENERIC, description="What the asset is.")
    actuator: ActuatorConfig = Field(description="How it is switched: `type` shelly, homeassistant or mqtt.")
    rated_power_w: float = Field(gt=0, description="Power it draws when on (the estimate when no meter measures it).")
    meter_id: str | None = Field(default=None, description="The meter that measures it (its `power` readings).")
    priority: int = Field(default=5, ge=0, le=100, description="Shed order: lower sheds first, restores last.")
    normal_on: bool = Field(default=True, description="Whether it is on when flex leaves it alone.")
    can_boost: bool = Field(
        default=False, description="May be switched on to absorb power in an up event (only if `normal_on` is false)."
    )
    min_on_s: float = Field(default=60.0, ge=0, description="Least time on after flex switched it on.")
    min_off_s: float = Field(default=60.0, ge=0, description="Least time off after flex switched it off.")
    max_shed_s: float = Field(
        default=7200.0, gt=0, description="Longest flex keeps it away from normal, whatever the event says."
    )
    windows: list[str] = Field(
        default_factory=list, description="Local times flex may act on it, `HH:MM-HH:MM` (empty: any time)."
    )

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, value: list[str]) -> list[str]:
        for window in value:
            if not _WINDOW.match(window):
                raise ValueError(f"time window {window!r} is not HH:MM-HH:MM")
        return value

    @model_validator(mode="after")
    def _check_timers(self) -> AssetConfig:
        # The safety restore at max_shed_s must never have to break min_off_s.
        if self.min_off_s > self.max_shed_s:
            raise ValueError("min_off_s must not exceed max_shed_s")
        return self

    @property
    def display_name(self) -> str:
        """The name to show people."""
        return self.name or self.id.replace("_", " ").capitalize()
