"""Flexibility events: the one model every event source (OpenADR, community MQTT, manual) maps to.

Community and manual events are JSON on MQTT, validated against `FlexEventMessage`
(its JSON schema is `docs/flex-event.schema.json`, kept in step by a test):

    {"id": "dfs-2026-11-21", "start": "2026-11-21T17:00:00Z", "duration_s": 3600,
     "direction": "down", "target_w": 1500}

`level` (1-3, like OpenADR's SIMPLE signal) may stand in for `target_w`: level n asks
for n/3 of the flexible power. `"cancelled": true` with the same `id` cancels; a
message with a known `id` and a higher `modification` replaces the event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ParseError
from .policy import Direction

#: Longest event accepted (a day): anything longer is a mistake, not a grid request.
MAX_DURATION_S = 86_400


class FlexEventMessage(BaseModel):
    """A flexibility event as published on `<base>/flex/event` (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="HEMS flexibility event")

    id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", description="Event id, unique per programme."
    )
    start: AwareDatetime = Field(description="Start, ISO 8601 with a time zone.")
    duration_s: int = Field(gt=0, le=MAX_DURATION_S, description="Duration in seconds.")
    direction: Literal["down", "up"] = Field(description="`down`: import less; `up`: import more.")
    target_w: float | None = Field(default=None, gt=0, le=100_000, description="Requested change in W.")
    level: int | None = Field(default=None, ge=1, le=3, description="Instead of target_w: 1-3, n/3 of flexible power.")
    modification: int = Field(default=0, ge=0, description="Higher numbers replace an event with the same id.")
    cancelled: bool = Field(default=False, description="Cancel the event with this id.")

    @model_validator(mode="after")
    def _one_target(self) -> FlexEventMessage:
        if (self.target_w is None) == (self.level is None):
            raise ValueError("exactly one of target_w and level is required")
        return self


@dataclass(frozen=True, slots=True)
class FlexEvent:
    """An event from any source. `target_w` None means `level` decides (see `target_for_level`)."""

    event_id: str
    source: str
    direction: Direction
    start: datetime
    end: datetime
    target_w: float | None
    level: int | None
    modification: int = 0
    cancelled: bool = False

    def to_json(self) -> dict[str, Any]:
        """The event as JSON-able data (persisted state, event log)."""
        return {
            "event_id": self.event_id,
            "source": self.source,
            "direction": self.direction.value,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "target_w": self.target_w,
            "level": self.level,
            "modification": self.modification,
            "cancelled": self.cancelled,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlexEvent:
        """Inverse of `to_json`; raises `KeyError`/`ValueError` on damaged data."""
        return cls(
            event_id=str(data["event_id"]),
            source=str(data["source"]),
            direction=Direction(data["direction"]),
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            target_w=None if data["target_w"] is None else float(data["target_w"]),
            level=None if data["level"] is None else int(data["level"]),
            modification=int(data["modification"]),
            cancelled=bool(data["cancelled"]),
        )

    def cancel(self) -> FlexEvent:
        """This event, cancelled."""
        return replace(self, cancelled=True)


def parse_event_message(payload: bytes, source: str) -> FlexEvent:
    """Validate one MQTT event message; raises `ParseError` naming what is wrong."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as err:
        raise ParseError(f"not JSON: {err}") from err
    try:
        message = FlexEventMessage.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}"
            for e in err.errors(include_url=False, include_input=False)
        )
        raise ParseError(problems) from err
    return FlexEvent(
        event_id=message.id,
        source=source,
        direction=Direction(message.direction),
        start=message.start,
        end=message.start + timedelta(seconds=message.duration_s),
        target_w=message.target_w,
        level=message.level,
        modification=message.modification,
        cancelled=message.cancelled,
    )


def target_for_level(level: int, flexible_w: float) -> float:
    """The W a `level` (1-3) asks for: level/3 of the flexible power (at least 1 W)."""
    return max(1.0, flexible_w * min(3, max(1, level)) / 3)


def event_schema() -> dict[str, Any]:
    """The JSON schema of `FlexEventMessage` (published as docs/flex-event.schema.json)."""
    return FlexEventMessage.model_json_schema()


if __name__ == "__main__":  # regenerate docs/flex-event.schema.json
    print(json.dumps(event_schema(), indent=2, sort_keys=True))
