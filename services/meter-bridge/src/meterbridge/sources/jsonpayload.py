"""Small pure helpers shared by the parsers of JSON-over-MQTT meters (zigbee2mqtt, glow).

Each raises only `ParseError`, never logs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import ParseError
from ..model import TOTALS, Quantity, Reading


@dataclass(frozen=True, slots=True)
class ParseOutcome:
    """What a parser made of one message: readings, and why any value in it was dropped.

    `dropped` holds one short reason per dropped value (`"power.value: meter error
    sentinel -8388.608"`) for the source to count and log; none of them is published.
    """

    readings: list[Reading] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def add(
        self,
        name: str,
        raw: object,
        reading: tuple[str, Quantity, datetime],
        unit: object = None,
        scales: Mapping[str, float] | None = None,
        sentinels: tuple[float, ...] = (),
    ) -> None:
        """Add the reading `(meter id, quantity, ts)` of `raw` x `scales[unit]`, or why it was dropped.

        Dropped: not a number, one of `sentinels` (compared before scaling), a unit not
        in `scales` (when `scales` is given), a negative total.
        """
        value = as_number(raw)
        if value is None:
            self.dropped.append(f"{name}: not a number ({str(raw)[:20]!r})")
            return
        if any(abs(value - sentinel) < 1e-6 for sentinel in sentinels):
            self.dropped.append(f"{name}: meter error sentinel {value!r}")
            return
        if scales is not None:
            scale = scales.get(unit) if isinstance(unit, str) else None
            if scale is None:
                self.dropped.append(f"{name}: unknown unit {str(unit)[:20]!r}")
                return
            value *= scale
        meter_id, quantity, ts = reading
        if quantity in TOTALS and value < 0:
            self.dropped.append(f"{name}: negative total {value!r}")
            return
        self.readings.append(Reading.of(meter_id, quantity, value, ts))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def load_json(payload: bytes | str) -> Any:
    """Decode a JSON payload; `ParseError` on bad UTF-8, bad JSON, NaN/Infinity or absurd nesting."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        return json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ParseError(f"not JSON: {err}") from err


def load_object(payload: bytes | str) -> dict[str, Any]:
    """Decode a payload that must be a JSON object; `ParseError` otherwise."""
    data = load_json(payload)
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}")
    return data


def as_number(value: object) -> float | None:
    """`value` as a finite float, or None when it is not a JSON number (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def as_timestamp(value: object) -> datetime | None:
    """An ISO 8601 string as an aware UTC datetime (naive means UTC), or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
