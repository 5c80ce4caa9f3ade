"""Configuration of the EMU-2 / RAVEn source (`type: emu2`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...configbase import SourceConfigBase


class Emu2SourceConfig(SourceConfigBase):
    """`type: emu2`: a Rainforest EMU-2 or RAVEn reading the utility smart meter over USB serial."""

    type: Literal["emu2"] = Field(description="Source family.")
    port: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Serial port, e.g. the stable `/dev/serial/by-id/usb-Rainforest_...` path. Default: the first EMU-2"
            " (USB 04b4:0003) or RAVEn (0403:8a28) plugged in, looked up by its USB ids again after every replug."
        ),
    )
    demand_interval_s: int = Field(
        default=10, ge=1, le=3600, description="Seconds between power (demand) pushes asked of the device."
    )
    summation_interval_s: int = Field(
        default=60, ge=1, le=3600, description="Seconds between energy total (summation) pushes asked of the device."
    )
    period_interval_s: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="Seconds between polls of the period usage the device counts (current and last period; 0: off).",
    )
    meter_mac: str | None = Field(
        default=None,
        pattern=r"^(0x)?[0-9A-Fa-f]{16}$|^([0-9A-Fa-f]{2}[:-]){7}[0-9A-Fa-f]{2}$",
        description="MeterMacId of the meter to read when the device is joined to several (default: any).",
    )
