"""Pure parsing of a Hildebrand Glow CAD's local MQTT messages (UK SMETS2 meters).

Topics: `glow/<device id>/SENSOR/electricitymeter`, `.../SENSOR/gasmeter` and
`glow/<device id>/STATE`. A meter message looks like
`{"electricitymeter": {"timestamp": "2022-06-24T13:02:29Z", "energy": {"export":
{"cumulative": 0, "units": "kWh"}, "import": {"cumulative": 4595.563, "units": "kWh",
"price": {"unitrate": 0.3, "standingcharge": 0.4457}}}, "power": {"value": 0.623,
"units": "kW"}}}`; the gas meter's is the same under `gasmeter` (its `power` is not
used: gas flow is not electrical power). Power comes in kW and becomes W; prices are
the supplier's currency per kWh and per day.

The meter reports `-8388.608` (the most negative 24-bit value, 0x800000, at three
decimals) when it has no valid reading: such values are dropped and named in
`ParseOutcome.dropped`, never turned into readings.

Nothing here logs or does I/O; every function raises only `ParseError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ...errors import ParseError
from ...model import Quantity
from ..jsonpayload import ParseOutcome, as_timestamp, load_object

MeterKind = Literal["electricitymeter", "gasmeter"]
MESSAGE_KINDS: frozenset[str] = frozenset({"electricitymeter", "gasmeter", "STATE"})

#: Error sentinels: -0x800000 / 1000 as documented, and the same raw value unscaled,
#: in case a meter reports in W or Wh.
SENTINELS: tuple[float, ...] = (-8388.608, -8388608.0)

_ENERGY_SCALE = {"kWh": 1.0, "Wh": 0.001}
_POWER_SCALE = {"kW": 1000.0, "W": 1.0}

#: (path in the meter object, quantity, where the unit is, scale table) for each kind.
_Field = tuple[tuple[str, ...], Quantity, tuple[str, ...] | None, Mapping[str, float] | None]
_FIELDS: dict[str, list[_Field]] = {
    "electricitymeter": [
        (("power", "value"), Quantity.POWER, ("power", "units"), _POWER_SCALE),
        (("energy", "import", "cumulative"), Quantity.ENERGY_IMPORT, ("energy", "import", "units"), _ENERGY_SCALE),
        (("energy", "export", "cumulative"), Quantity.ENERGY_EXPORT, ("energy", "export", "units"), _ENERGY_SCALE),
        (("energy", "import", "price", "unitrate"), Quantity.PRICE, None, None),
        (("energy", "import", "price", "standingcharge"), Quantity.STANDING_CHARGE, None, None),
    ],
    "gasmeter": [
        (("energy", "import", "cumulative"), Quantity.GAS_ENERGY, ("energy", "import", "units"), _ENERGY_SCALE),
        (("energy", "import", "price", "unitrate"), Quantity.PRICE, None, None),
        (("energy", "import", "price", "standingcharge"), Quantity.STANDING_CHARGE, None, None),
    ],
}


@dataclass(frozen=True, slots=True)
class GlowTopic:
    """A Glow topic taken apart: the CAD's device id and the message kind."""

    device: str
    kind: str


@dataclass(frozen=True, slots=True)
class GlowState:
    """The CAD's own status: firmware, hardware and whether it is joined to the meters' HAN."""

    software: str | None
    hardware: str | None
    han_joined: bool | None


def parse_topic(prefix: str, topic: str) -> GlowTopic | None:
    """`glow/<device>/SENSOR/<kind>` or `glow/<device>/STATE` taken apart; None for any other topic."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) == 3 and parts[1] == "SENSOR" and parts[2] in MESSAGE_KINDS:
        return GlowTopic(parts[0], parts[2])
    if len(parts) == 2 and parts[1] == "STATE":
        return GlowTopic(parts[0], "STATE")
    return None


def _get(data: Mapping[str, Any], path: tuple[str, ...]) -> object:
    current: object = data
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


def parse_meter(kind: MeterKind, payload: bytes | str, meter_id: str, now: datetime) -> ParseOutcome:
    """Readings of one `electricitymeter` or `gasmeter` message.

    `ts` is the meter's own `timestamp` when it has one, else `now`. Raises
    `ParseError` when the payload is not a JSON object with a `kind` object in it.
    A sentinel, a value that is not a number, a unit we do not know or a negative
    total is dropped and named in `dropped`; an absent value is simply not read.
    """
    data = load_object(payload)
    meter = data.get(kind)
    if not isinstance(meter, dict):
        raise ParseError(f"{kind}: no {kind!r} object in the message")
    ts = as_timestamp(meter.get("timestamp")) or now
    outcome = ParseOutcome()
    for path, quantity, unit_path, scales in _FIELDS[kind]:
        raw = _get(meter, path)
        name = ".".join(path)
        if raw is None:
            continue
        unit = None
        if unit_path is not None and scales is not None:
            unit = _get(meter, unit_path)
            if not isinstance(unit, str):
                unit = next(iter(scales))  # the CAD always sends units; without one, the documented unit
        outcome.add(f"{kind}.{name}", raw, (meter_id, quantity, ts), unit, scales, SENTINELS)
    return outcome


def parse_state(payload: bytes | str) -> GlowState:
    """The CAD's `STATE` message; `ParseError` unless it is a JSON object."""
    data = load_object(payload)
    han = data.get("han")
    status = han.get("status") if isinstance(han, dict) else None
    software, hardware = data.get("software"), data.get("hardware")
    return GlowState(
        software=software if isinstance(software, str) else None,
        hardware=hardware if isinstance(hardware, str) else None,
        han_joined=None if not isinstance(status, str) else status == "joined",
    )
