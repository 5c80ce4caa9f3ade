"""Configuration of a `type: glow` source."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...configbase import SourceConfigBase


class GlowSourceConfig(SourceConfigBase):
    """`type: glow`: a Hildebrand Glow CAD publishing a UK smart meter (electricity and gas) to the bridge's broker.

    Meter ids are `<id>_electricity` and `<id>_gas`.
    """

    type: Literal["glow"] = Field(description="Source family.")
    topic_prefix: str = Field(
        default="glow",
        pattern=r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$",
        description="The CAD's MQTT topic prefix (its messages are on `<prefix>/<device id>/SENSOR/...`).",
    )
    device: str | None = Field(
        default=None,
        pattern=r"^[^#+/]+$",
        description="Device id of the CAD as in its topics (default: the first CAD heard).",
    )
    electricity: bool = Field(default=True, description="Read the electricity meter.")
    gas: bool = Field(default=True, description="Read the gas meter.")
