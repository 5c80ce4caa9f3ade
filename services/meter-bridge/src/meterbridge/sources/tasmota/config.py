"""Configuration of a `type: tasmota` source. Kept free of I/O imports: the config schema imports it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...configbase import SourceConfigBase


class TasmotaSourceConfig(SourceConfigBase):
    """`type: tasmota`: every Tasmota device with an energy monitor that announces itself (Tasmota's own
    discovery, `SetOption19 0`, the default since 9.2), read without a preset block per device.

    Meter ids are `<id>_<MAC>` (`<id>_<MAC>_<n>` per channel of a multi-channel meter).
    """

    type: Literal["tasmota"] = Field(description="Source family.")
    discovery_prefix: str = Field(
        default="tasmota/discovery",
        pattern=r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$",
        description="Where Tasmota announces itself (`<prefix>/<MAC>/config` and `<prefix>/<MAC>/sensors`).",
    )
    devices: list[str] | None = Field(
        default=None,
        description="MAC addresses (12 hex digits) or `%topic%`s to read (default: every device with `ENERGY`).",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="`%topic%`s not to read (already read elsewhere, e.g. by a `type: mqtt` tasmota preset).",
    )
