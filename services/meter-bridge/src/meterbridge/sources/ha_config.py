"""The `ha` source's settings, apart from the source so that the schema does not load aiohttp."""

from __future__ import annotations

import bisect
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from ..configbase import Identifier, SourceConfigBase, StrictModel


class LinearMap(StrictModel):
    """`value_min`..`value_max` maps onto `watts_min`..`watts_max` (clamped)."""

    value_min: float = Field(default=0.0, description="Entity value at the low end.")
    value_max: float = Field(description="Entity value at the high end (255 for brightness).")
    watts_min: float = Field(default=0.0, description="Watts at the low end.")
    watts_max: float = Field(description="Watts at the high end.")

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.value_max == self.value_min:
            raise ValueError("value_max must differ from value_min")
        return self


_ATTRIBUTE_PATH = r"^[^.]+(\.[^.]+)*$"


class HaEntityConfig(StrictModel):
    """One entity read as a power meter."""

    entity_id: str = Field(pattern=r"^[a-z0-9_]+\.[a-z0-9_]+$", description="The entity (`light.kitchen`).")
    meter: Identifier = Field(description="Meter id its power is published as (a Kasa plug's `meter`).")
    attribute: str | None = Field(
        default=None,
        pattern=_ATTRIBUTE_PATH,
        description="Read this attribute instead of the state; a dotted path reads nested ones (`usage.power`).",
    )
    state_attribute: str | None = Field(
        default=None,
        pattern=_ATTRIBUTE_PATH,
        description="Take the on/off state from this attribute (a dotted path) instead of the entity's state.",
    )
    off_w: float = Field(default=0.0, description="Watts while the entity is off (or lacks the attribute).")
    off_states: list[str] = Field(default=["off"], description="States meaning off (`off_w`).")
    on_states: list[str] = Field(
        default=[], description="States meaning on (`on_w`): a switch's `on`. Empty: on is read from the value."
    )
    on_w: float | None = Field(default=None, description="Watts while the state is one of `on_states`.")
    linear: LinearMap | None = Field(default=None, description="Map the value to watts linearly.")
    table: list[tuple[float, float]] | None = Field(
        default=None, min_length=2, description="Map the value to watts by `[value, watts]` points (interpolated)."
    )

    @model_validator(mode="after")
    def _one_map(self) -> Self:
        if self.linear is not None and self.table is not None:
            raise ValueError("set linear or table, not both")
        if bool(self.on_states) != (self.on_w is not None):
            raise ValueError("on_states and on_w go together")
        both = set(self.on_states) & set(self.off_states)
        if both:
            raise ValueError(f"states both on and off: {sorted(both)}")
        return self

    def watts(self, value: float) -> float:
        """Watts for an entity value: mapped, else the value itself."""
        if self.linear is not None:
            m = self.linear
            fraction = min(1.0, max(0.0, (value - m.value_min) / (m.value_max - m.value_min)))
            return m.watts_min + fraction * (m.watts_max - m.watts_min)
        if self.table is not None:
            points = sorted(self.table)
            xs = [x for x, _ in points]
            if value <= xs[0]:
                return points[0][1]
            if value >= xs[-1]:
                return points[-1][1]
            i = bisect.bisect_right(xs, value)
            (x0, y0), (x1, y1) = points[i - 1], points[i]
            return y0 + (value - x0) / (x1 - x0) * (y1 - y0)
        return value


class HaSourceConfig(SourceConfigBase):
    """`type: ha`: Home Assistant entities (a dimmer's brightness, a power sensor) as power meters."""

    type: Literal["ha"] = Field(description="Source family.")
    url: str = Field(
        default="ws://127.0.0.1:8123/api/websocket",
        description="HA's websocket URL (the bridge shares the host network with HA).",
    )
    token: SecretStr = Field(description="Long-lived access token (required; use `${HA_TOKEN}`).")
    entities: list[HaEntityConfig] = Field(min_length=1, description="The entities to read.")
