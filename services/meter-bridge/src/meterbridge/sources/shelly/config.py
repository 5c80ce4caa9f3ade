"""`type: shelly` settings. Kept free of I/O imports: the config schema imports it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...configbase import Identifier, SourceConfigBase, StrictModel


class ShellyDeviceConfig(StrictModel):
    """One Shelly device on the broker."""

    prefix: str = Field(
        pattern=r"^[^#+/]+(/[^#+/]+)*$",
        description="The device's MQTT topic prefix: `shelly/<device id>` as `meter-bridge shelly provision` sets it "
        "(e.g. `shelly/shellypro3em-0cb815fc11f8`), the only one the release's broker lets the device use.",
    )
    id: Identifier | None = Field(
        default=None,
        description="Meter id part for this device (default: the prefix without `shelly/`, made into an id).",
    )
    name: str | None = Field(default=None, description="Name shown in Home Assistant (default: the id).")
    channels: dict[int, Identifier] = Field(
        default_factory=dict,
        description='Meter id per channel number (`{"0": immersion}`), replacing `<source>_<device>[_<n>]`.',
    )
    relays: bool = Field(
        default=True, description="Offer each `switch:N` relay as a Home Assistant switch and for demand response."
    )


class ShellySourceConfig(SourceConfigBase):
    """`type: shelly`: Shelly Gen2+ meters and relays over MQTT (see the Shelly section)."""

    type: Literal["shelly"] = Field(description="Source family.")
    devices: list[ShellyDeviceConfig] = Field(default_factory=list, description="The devices, by topic prefix.")
    discover: bool = Field(
        default=False,
        description="Also take in every device that announces `shelly/<device id>/online` (provisioned) "
        "or `<device id>/online` (the device's default prefix).",
    )
    rpc_timeout_s: float = Field(default=10.0, gt=0, le=120, description="How long to wait for an RPC reply.")
    reemit_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Re-send the last known values of an online device this often (Shelly only sends changes).",
    )

    @model_validator(mode="after")
    def _unique_prefixes(self) -> ShellySourceConfig:
        prefixes = [device.prefix for device in self.devices]
        duplicates = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if duplicates:
            raise ValueError(f"devices listed twice: {', '.join(duplicates)}")
        return self
