"""Pure reading of generic MQTT payloads: a plain number, or a number at a key path in JSON.

A `MeterPlan` says, per topic, which quantities a meter reads there (`Extract`: key path,
unit conversion, scale), where its on/off state and its availability are, and after how
long without a reading it is unavailable. `MeterParser.parse` turns one message into a
`ParseOutcome`; `Tracker` decides availability from availability messages, readings and
the clock. Plans are made from the config (`config.MqttMeterConfig.plan`), presets included.

Nothing here logs or does I/O; `parse` raises only `ParseError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...errors import ParseError
from ...model import TOTALS, UNITS, Quantity, Reading, Unit
from ..jsonpayload import ParseOutcome, as_number, load_json

#: (factor, offset): ours = theirs x factor + offset. Keyed by our unit, then by the device's.
CONVERSIONS: dict[Unit, dict[str, tuple[float, float]]] = {
    Unit.WATT: {"W": (1.0, 0.0), "kW": (1000.0, 0.0), "mW": (0.001, 0.0)},
    Unit.KILOWATT_HOUR: {"kWh": (1.0, 0.0), "Wh": (0.001, 0.0), "MWh": (1000.0, 0.0)},
    Unit.VOLT: {"V": (1.0, 0.0), "mV": (0.001, 0.0)},
    Unit.AMPERE: {"A": (1.0, 0.0), "mA": (0.001, 0.0)},
    Unit.HERTZ: {"Hz": (1.0, 0.0)},
    Unit.RATIO: {"": (1.0, 0.0), "%": (0.01, 0.0)},
    Unit.PERCENT: {"%": (1.0, 0.0)},
    Unit.CELSIUS: {
        "°C": (1.0, 0.0),
        "C": (1.0, 0.0),
        "°F": (5 / 9, -160 / 9),
        "F": (5 / 9, -160 / 9),
        "K": (1.0, -273.15),
    },
    Unit.PPM: {"ppm": (1.0, 0.0)},
    Unit.CURRENCY_PER_KWH: {"currency/kWh": (1.0, 0.0)},
    Unit.CURRENCY_PER_DAY: {"currency/day": (1.0, 0.0)},
}


def check_unit(quantity: Quantity, unit: str) -> None:
    """Raise `ValueError` naming the accepted units when `unit` does not convert to `quantity`'s."""
    accepted = CONVERSIONS.get(UNITS[quantity], {})
    if unit not in accepted:
        raise ValueError(f"{quantity.value} cannot be given in {unit!r}; one of {', '.join(sorted(accepted))}")


def conversion(quantity: Quantity, unit: str | None, scale: float = 1.0) -> tuple[float, float]:
    """(factor, offset) from `unit` (None: the quantity's own) then `scale`; `KeyError` for a unit not accepted."""
    factor, offset = (1.0, 0.0) if unit is None else CONVERSIONS[UNITS[quantity]][unit]
    return factor * scale, offset * scale


def split_key(key: str | None) -> tuple[str, ...] | None:
    """`"ENERGY.Power"` as `("ENERGY", "Power")`; None stays None (the payload is the value)."""
    return None if key is None else tuple(key.split("."))


@dataclass(frozen=True, slots=True)
class Extract:
    """One quantity read from a topic: at `path` in its JSON (None: the whole payload), then x factor + offset.

    `item`: when the value is a list (a multi-channel Tasmota meter), the index to take.
    """

    quantity: Quantity
    path: tuple[str, ...] | None = None
    factor: float = 1.0
    offset: float = 0.0
    item: int | None = None

    @property
    def name(self) -> str:
        """How a dropped value is named: its key path, or the quantity for a plain payload."""
        return ".".join(self.path) if self.path else self.quantity.value


@dataclass(frozen=True, slots=True)
class OnOff:
    """Power from an on/off state: `on_w` for one of `on_values`, `off_w` for one of `off_values`."""

    topic: str
    path: tuple[str, ...] | None
    on_w: float
    off_w: float
    on_values: frozenset[str]
    off_values: frozenset[str]


@dataclass(frozen=True, slots=True)
class MeterPlan:
    """Everything the source needs to read one meter (made by `MqttMeterConfig.plan`)."""

    meter_id: str
    topics: Mapping[str, tuple[Extract, ...]] = field(default_factory=dict)
    on_off: OnOff | None = None
    availability_topic: str | None = None
    payload_available: str = "online"
    payload_not_available: str = "offline"
    timeout_s: float | None = None

    @property
    def subscriptions(self) -> list[str]:
        """Every topic the meter is read from, sorted."""
        topics = set(self.topics)
        if self.on_off is not None:
            topics.add(self.on_off.topic)
        if self.availability_topic is not None:
            topics.add(self.availability_topic)
        return sorted(topics)


def _at(data: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) at `path`: dict keys by name, list items by index."""
    node = data
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _number(raw: object) -> float | None:
    """A JSON number, or a string holding a finite decimal number (ESPHome and OpenEVSE send text)."""
    number = as_number(raw)
    if number is not None or not isinstance(raw, str):
        return number
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParseError(f"not UTF-8: {err}") from err


class MeterParser:
    """Pure: one meter's messages in, readings out (see the module docstring)."""

    def __init__(self, plan: MeterPlan) -> None:
        self.plan = plan

    def parse(self, topic: str, payload: bytes, ts: datetime) -> ParseOutcome:
        """Readings of the quantities read from `topic` (and the on/off power if it is the state topic).

        `ParseError` when a key path is configured for this topic and the payload is not JSON,
        or the payload is not UTF-8. A missing key, a value that is not a number or a negative
        total is named in `dropped`.
        """
        outcome = ParseOutcome()
        extracts = self.plan.topics.get(topic, ())
        on_off = self.plan.on_off if self.plan.on_off is not None and self.plan.on_off.topic == topic else None
        if not extracts and on_off is None:
            return outcome
        text = _text(payload)
        needs_json = any(e.path for e in extracts) or (on_off is not None and on_off.path is not None)
        data: Any = load_json(text) if needs_json else None
        for extract in extracts:
            if extract.path is None:
                raw: object = text
            else:
                found, raw = _at(data, extract.path)
                if not found:
                    outcome.dropped.append(f"{extract.name}: missing")
                    continue
            if isinstance(raw, list):
                if extract.item is None or extract.item >= len(raw):
                    outcome.dropped.append(f"{extract.name}: a list of {len(raw)} (set channel)")
                    continue
                raw = raw[extract.item]
            self._add(outcome, extract, raw, ts)
        if on_off is not None:
            self._on_off(outcome, on_off, text, data, ts)
        return outcome

    def _add(self, outcome: ParseOutcome, extract: Extract, raw: object, ts: datetime) -> None:
        value = _number(raw)
        if value is None:
            outcome.dropped.append(f"{extract.name}: not a number ({str(raw)[:20]!r})")
            return
        value = value * extract.factor + extract.offset
        if not math.isfinite(value):
            outcome.dropped.append(f"{extract.name}: out of range")
            return
        if extract.quantity in TOTALS and value < 0:
            outcome.dropped.append(f"{extract.name}: negative total {value!r}")
            return
        outcome.readings.append(Reading.of(self.plan.meter_id, extract.quantity, value, ts))

    def _on_off(self, outcome: ParseOutcome, on_off: OnOff, text: str, data: Any, ts: datetime) -> None:
        raw: object = text.strip()
        if on_off.path is not None:
            found, raw = _at(data, on_off.path)
            if not found:
                outcome.dropped.append(f"{'.'.join(on_off.path)}: missing")
                return
        state = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if state in on_off.on_values:
            watts = on_off.on_w
        elif state in on_off.off_values:
            watts = on_off.off_w
        else:
            outcome.dropped.append(f"on/off state: neither on nor off ({state[:20]!r})")
            return
        outcome.readings.append(Reading.of(self.plan.meter_id, Quantity.POWER, watts, ts))

    def availability(self, payload: bytes) -> bool | None:
        """True/False for the plan's online/offline payloads on its availability topic; None for others."""
        text = payload.decode("utf-8", "replace").strip()
        if text == self.plan.payload_available:
            return True
        if text == self.plan.payload_not_available:
            return False
        return None


class Tracker:
    """Whether a meter is available: online (or no availability topic), has reported, not timed out.

    Times are monotonic seconds passed in by the caller, so the rule is tested without sleeping.
    """

    def __init__(self, plan: MeterPlan) -> None:
        self.timeout_s = plan.timeout_s
        self.online: bool | None = None
        self.last_reading: float | None = None

    def reading(self, now: float) -> bool:
        """A reading arrived at `now`; returns availability."""
        self.last_reading = now
        return self.available(now)

    def announced(self, online: bool, now: float) -> bool:
        """The device said it is online or offline; returns availability."""
        self.online = online
        return self.available(now)

    def available(self, now: float) -> bool:
        """Availability at `now`."""
        if self.online is False or self.last_reading is None:
            return False
        return self.timeout_s is None or now - self.last_reading <= self.timeout_s
