"""Pure Shelly Gen2+ parsing: frames, status merging, components to readings.

Shelly only sends what changed (`NotifyStatus` is a delta), so a device's full status
is kept by merging every delta over the last `NotifyFullStatus` / `Shelly.GetStatus`
result with `merge_status`, and readings are always made from the merged status:
values that have not changed for minutes are still reported.

Component shapes (Shelly Gen2 API docs, "ComponentsAndServices"): `switch:N` and
`pm1:N` (`apower` W, `voltage`, `current`, `freq`, `pf`, `aenergy.total` Wh,
`ret_aenergy.total` Wh), `em:N` (`a_/b_/c_act_power` ..., `total_act_power`),
`emdata:N` (`a_total_act_energy`, `a_total_act_ret_energy` ..., `total_act`,
`total_act_ret`, Wh), `em1:N` (`act_power`, `voltage`, `current`, `pf`, `freq`),
`em1data:N` (`total_act_energy`, `total_act_ret_energy`, Wh). Shelly's sign
convention matches ours: power is positive when consuming, negative when returning.

Nothing here does I/O or logs above debug; the only exception raised is `ParseError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from ...errors import ParseError
from ...model import MeterDescription, Quantity, Reading

#: A device's status as Shelly sends it: component key (`switch:0`) -> component status.
Status = dict[str, Any]

FrameKind = Literal["full", "delta", "event", "reply"]

_WH_PER_KWH = 1000.0
PHASES = ("a", "b", "c")


class RpcError(TypedDict):
    """`error` of a failed RPC reply."""

    code: int
    message: str


class RpcFrame(TypedDict, total=False):
    """A JSON-RPC frame on `<prefix>/events/rpc` or `<src>/rpc`."""

    id: int
    src: str
    dst: str
    method: str
    params: Status
    result: Any
    error: RpcError


class EnergyCounter(TypedDict, total=False):
    """`aenergy` / `ret_aenergy` of a `switch` or `pm1` (Wh)."""

    total: float


class SwitchStatus(TypedDict, total=False):
    """`switch:N` (and `pm1:N`, which has no `output`)."""

    id: int
    output: bool
    apower: float
    voltage: float
    current: float
    freq: float
    pf: float
    aenergy: EnergyCounter
    ret_aenergy: EnergyCounter


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded RPC frame: a full status, a delta, an event or a reply to our request."""

    kind: FrameKind
    src: str
    params: Status = field(default_factory=dict)
    request_id: int | None = None
    result: Any = None
    error: RpcError | None = None


_NOTIFY_KINDS: dict[str, FrameKind] = {
    "NotifyFullStatus": "full",
    "NotifyStatus": "delta",
    "NotifyEvent": "event",
}


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ParseError(f"not JSON: {err}") from err
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}")
    return data


def decode_frame(payload: bytes) -> Frame:
    """Decode a frame from `<prefix>/events/rpc` or `<src>/rpc`; raises `ParseError`."""
    data = _json_object(payload)
    src = data.get("src")
    if not isinstance(src, str) or not src:
        raise ParseError("frame has no `src`")
    method = data.get("method")
    if isinstance(method, str):
        kind = _NOTIFY_KINDS.get(method)
        if kind is None:
            raise ParseError(f"unknown method {method[:40]!r}")
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise ParseError(f"{method}: `params` is not an object")
        return Frame(kind, src, params)
    request_id = data.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise ParseError("frame has neither `method` nor an integer `id`")
    error = data.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise ParseError("`error` is not an object")
        code = error.get("code")
        message = error.get("message")
        return Frame(
            "reply",
            src,
            request_id=request_id,
            error=RpcError(code=code if isinstance(code, int) else -1, message=str(message)),
        )
    if "result" not in data:
        raise ParseError("reply has neither `result` nor `error`")
    return Frame("reply", src, request_id=request_id, result=data["result"])


def status_time(params: Mapping[str, Any]) -> datetime | None:
    """The device's own time of a status: a notification's `ts` (Unix s, fractional), else
    `sys.unixtime` of a `Shelly.GetStatus` result; None when it has neither (no clock yet).

    Readings are stamped with it, not with the time they arrive: a frame the broker delivers
    again after a reconnect (QoS 1) then carries its old time and cannot pass for a new one.
    """
    ts = params.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        sys_status = params.get("sys")
        ts = sys_status.get("unixtime") if isinstance(sys_status, Mapping) else None
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts) or ts <= 0:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_online(payload: bytes) -> bool:
    """`<prefix>/online`: `true` or `false`; raises `ParseError` on anything else."""
    text = payload.strip().lower()
    if text == b"true":
        return True
    if text == b"false":
        return False
    raise ParseError(f"online is neither true nor false: {payload[:20]!r}")


def parse_component_status(component: str, payload: bytes) -> Status:
    """`<prefix>/status/<component>` (with `status_ntf`) as a delta; raises `ParseError`."""
    return {component: _json_object(payload)}


def merge_status(full: Mapping[str, Any], delta: Mapping[str, Any]) -> Status:
    """The status after `delta`: nested objects merge key by key, other values replace.

    Pure: neither argument is modified. Shelly never signals a removed key, so none is removed.
    """
    merged: Status = dict(full)
    for key, value in delta.items():
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            merged[key] = merge_status(old, value)
        else:
            merged[key] = value
    return merged


def device_slug(prefix: str) -> str:
    """A topic prefix made into an id part: `shelly/shellypro3em-0cb815fc11f8` (what provisioning
    sets) and `shellypro3em-0cb815fc11f8` (the device's default) both -> `shellypro3em_0cb815fc11f8`."""
    slug = re.sub(r"[^a-z0-9]+", "_", prefix.lower().removeprefix("shelly/")).strip("_")
    return slug or "device"


@dataclass(frozen=True, slots=True)
class MeterNaming:
    """How a device's channels and phases become meter ids (documented in the README).

    Channel N of `switch`/`pm1`/`em1` and the total of `em:N` are `<base>` for N = 0 and
    `<base>_<N>` otherwise, unless `channels` names it; phase a/b/c of `em:N` add `_a`/`_b`/`_c`.
    """

    base: str
    name: str
    channels: Mapping[int, str] = field(default_factory=dict)

    def channel(self, n: int) -> str:
        """Meter id of channel `n`."""
        if n in self.channels:
            return self.channels[n]
        return self.base if n == 0 else f"{self.base}_{n}"

    def phase(self, n: int, phase: str) -> str:
        """Meter id of one phase of the three-phase meter `em:n`."""
        return f"{self.channel(n)}_{phase}"

    def channel_name(self, n: int) -> str:
        """Human name of channel `n`."""
        if n in self.channels:
            return self.channels[n].replace("_", " ").capitalize()
        return self.name if n == 0 else f"{self.name} {n}"


#: Components that carry no meter data; seen often, never counted as unknown.
_IGNORED = frozenset(
    {
        "sys", "wifi", "cloud", "mqtt", "ble", "eth", "ws", "input", "script", "temperature", "humidity",
        "devicepower", "modbus", "bthome", "bthomedevice", "bthomesensor", "knx", "ui", "plugs_ui", "matter",
        "zigbee", "illuminance", "voltmeter", "boolean", "number", "text", "enum", "group", "button", "ts",
        "light", "cover", "smoke", "pro_output", "wd", "service", "sensor", "presence", "lora",
    }
)  # fmt: skip
METER_COMPONENTS = frozenset({"switch", "pm1", "em", "emdata", "em1", "em1data"})


def split_key(key: str) -> tuple[str, int | None]:
    """`switch:1` -> (`switch`, 1); `sys` -> (`sys`, None); a bad index gives None."""
    kind, _, index = key.partition(":")
    return kind, (int(index) if index.isdigit() else None)


class _Collector:
    """Builds readings from one status, noting every problem instead of raising."""

    def __init__(self, ts: datetime) -> None:
        self.ts = ts
        self.readings: list[Reading] = []
        self.issues: list[str] = []

    def number(self, where: str, data: Mapping[str, Any], key: str) -> float | None:
        if key not in data or data[key] is None:
            return None
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.issues.append(f"{where}.{key} is not a number: {str(value)[:30]!r}")
            return None
        return float(value)

    def add(self, meter_id: str, quantity: Quantity, value: float | None, scale: float = 1.0) -> None:
        if value is None:
            return
        value /= scale
        if quantity in (Quantity.ENERGY_IMPORT, Quantity.ENERGY_EXPORT) and value < 0:
            self.issues.append(f"{meter_id} {quantity.value} is negative ({value})")
            return
        self.readings.append(Reading.of(meter_id, quantity, value, self.ts))

    def require(self, where: str, data: Mapping[str, Any], key: str) -> None:
        if key not in data:
            self.issues.append(f"{where} has no `{key}`")

    def counter(self, where: str, data: Mapping[str, Any], key: str) -> float | None:
        counter = data.get(key)
        if counter is None:
            return None
        if not isinstance(counter, Mapping):
            self.issues.append(f"{where}.{key} is not an object")
            return None
        return self.number(f"{where}.{key}", counter, "total")


_SINGLE_PHASE = (
    (Quantity.VOLTAGE, "voltage"),
    (Quantity.CURRENT, "current"),
    (Quantity.FREQUENCY, "freq"),
    (Quantity.POWER_FACTOR, "pf"),
)


def _switch_like(c: _Collector, key: str, data: Mapping[str, Any], meter_id: str, relay_only_ok: bool) -> None:
    if relay_only_ok and not any(k in data for k in ("apower", "aenergy", "voltage", "current")):
        return  # a relay without metering (Pro EM's contactor output)
    c.require(key, data, "apower")
    c.add(meter_id, Quantity.POWER, c.number(key, data, "apower"))
    for quantity, field_name in _SINGLE_PHASE:
        c.add(meter_id, quantity, c.number(key, data, field_name))
    c.add(meter_id, Quantity.ENERGY_IMPORT, c.counter(key, data, "aenergy"), _WH_PER_KWH)
    c.add(meter_id, Quantity.ENERGY_EXPORT, c.counter(key, data, "ret_aenergy"), _WH_PER_KWH)


def _em1(c: _Collector, key: str, data: Mapping[str, Any], meter_id: str) -> None:
    c.require(key, data, "act_power")
    c.add(meter_id, Quantity.POWER, c.number(key, data, "act_power"))
    for quantity, field_name in _SINGLE_PHASE:
        c.add(meter_id, quantity, c.number(key, data, field_name))


def _em1data(c: _Collector, key: str, data: Mapping[str, Any], meter_id: str) -> None:
    c.require(key, data, "total_act_energy")
    c.add(meter_id, Quantity.ENERGY_IMPORT, c.number(key, data, "total_act_energy"), _WH_PER_KWH)
    c.add(meter_id, Quantity.ENERGY_EXPORT, c.number(key, data, "total_act_ret_energy"), _WH_PER_KWH)


def _em(c: _Collector, key: str, data: Mapping[str, Any], naming: MeterNaming, n: int) -> None:
    c.require(key, data, "total_act_power")
    c.add(naming.channel(n), Quantity.POWER, c.number(key, data, "total_act_power"))
    c.add(naming.channel(n), Quantity.CURRENT, c.number(key, data, "total_current"))
    for phase in PHASES:
        meter_id = naming.phase(n, phase)
        c.add(meter_id, Quantity.POWER, c.number(key, data, f"{phase}_act_power"))
        for quantity, field_name in _SINGLE_PHASE:
            c.add(meter_id, quantity, c.number(key, data, f"{phase}_{field_name}"))


def _emdata(c: _Collector, key: str, data: Mapping[str, Any], naming: MeterNaming, n: int) -> None:
    c.require(key, data, "total_act")
    c.add(naming.channel(n), Quantity.ENERGY_IMPORT, c.number(key, data, "total_act"), _WH_PER_KWH)
    c.add(naming.channel(n), Quantity.ENERGY_EXPORT, c.number(key, data, "total_act_ret"), _WH_PER_KWH)
    for phase in PHASES:
        meter_id = naming.phase(n, phase)
        c.add(meter_id, Quantity.ENERGY_IMPORT, c.number(key, data, f"{phase}_total_act_energy"), _WH_PER_KWH)
        c.add(meter_id, Quantity.ENERGY_EXPORT, c.number(key, data, f"{phase}_total_act_ret_energy"), _WH_PER_KWH)


def status_readings(status: Mapping[str, Any], naming: MeterNaming, ts: datetime) -> tuple[list[Reading], list[str]]:
    """Readings of every meter in a full status, and a note for each problem met.

    Unknown components, missing or non-numeric fields and negative totals are noted
    (the caller counts them) and skipped; the rest of the status is still read.
    Energy is converted from Wh to kWh; returned energy becomes `energy_export`.
    """
    c = _Collector(ts)
    for key, data in status.items():
        kind, n = split_key(key)
        if kind in _IGNORED:
            continue
        if kind not in METER_COMPONENTS or n is None:
            c.issues.append(f"unknown component {key[:40]!r}")
            continue
        if not isinstance(data, Mapping):
            c.issues.append(f"{key} is not an object")
            continue
        if kind in ("switch", "pm1"):
            _switch_like(c, key, data, naming.channel(n), relay_only_ok=kind == "switch")
        elif kind == "em1":
            _em1(c, key, data, naming.channel(n))
        elif kind == "em1data":
            _em1data(c, key, data, naming.channel(n))
        elif kind == "em":
            _em(c, key, data, naming, n)
        else:
            _emdata(c, key, data, naming, n)
    return c.readings, c.issues


def relay_outputs(status: Mapping[str, Any]) -> dict[int, bool]:
    """Channel -> relay state of every `switch:N` whose `output` is known."""
    outputs: dict[int, bool] = {}
    for key, data in status.items():
        kind, n = split_key(key)
        if kind == "switch" and n is not None and isinstance(data, Mapping) and isinstance(data.get("output"), bool):
            outputs[n] = data["output"]
    return outputs


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What `Shelly.GetDeviceInfo` says about a device (the parts we show)."""

    device_id: str
    model: str | None = None
    app: str | None = None
    firmware: str | None = None
    generation: int | None = None


def parse_device_info(result: Any) -> DeviceInfo:
    """`Shelly.GetDeviceInfo` result -> `DeviceInfo`; raises `ParseError`."""
    if not isinstance(result, Mapping) or not isinstance(result.get("id"), str):
        raise ParseError("device info has no `id`")

    def text(key: str) -> str | None:
        value = result.get(key)
        return value if isinstance(value, str) else None

    gen = result.get("gen")
    return DeviceInfo(result["id"], text("model"), text("app"), text("ver"), gen if isinstance(gen, int) else None)


def meter_descriptions(
    status: Mapping[str, Any], naming: MeterNaming, info: DeviceInfo | None
) -> list[MeterDescription]:
    """One description per meter the status contains (phases carry `phase`)."""
    extra: dict[str, Any] = {"manufacturer": "Shelly", "source_type": "shelly"}
    if info is not None:
        extra.update(model=info.app or info.model, sw_version=info.firmware, hw_version=info.model)
    descriptions: dict[str, MeterDescription] = {}
    for key in status:
        kind, n = split_key(key)
        if kind not in METER_COMPONENTS or n is None:
            continue
        descriptions.setdefault(naming.channel(n), MeterDescription(naming.channel(n), naming.channel_name(n), **extra))
        if kind in ("em", "emdata"):
            for phase in PHASES:
                meter_id = naming.phase(n, phase)
                descriptions.setdefault(
                    meter_id,
                    MeterDescription(
                        meter_id, f"{naming.channel_name(n)} phase {phase.upper()}", phase=phase.upper(), **extra
                    ),
                )
    return list(descriptions.values())


class ShellyDeviceParser:
    """The merged status of one device and the readings made from it (pure, no I/O).

    `full` replaces the status, `delta` merges over it; both return the readings of the
    whole merged status at `ts` and the problems met in the new data.
    """

    def __init__(self, naming: MeterNaming) -> None:
        self.naming = naming
        self.status: Status = {}
        self.has_full = False

    def full(self, params: Mapping[str, Any], ts: datetime) -> tuple[list[Reading], list[str]]:
        """A full status (`NotifyFullStatus`, `Shelly.GetStatus`)."""
        self.status = {k: v for k, v in params.items() if k != "ts"}
        self.has_full = True
        return status_readings(self.status, self.naming, ts)

    def delta(self, params: Mapping[str, Any], ts: datetime) -> tuple[list[Reading], list[str]]:
        """A `NotifyStatus` delta (or one `status/<component>` message)."""
        changed = {k: v for k, v in params.items() if k != "ts"}
        self.status = merge_status(self.status, changed)
        readings, _ = status_readings(self.status, self.naming, ts)
        # Problems are reported for the new data only, so one bad field is not counted forever.
        _, issues = status_readings(changed, self.naming, ts)
        return readings, [issue for issue in issues if "has no" not in issue]

    def current(self, ts: datetime) -> list[Reading]:
        """The readings of the merged status again, at `ts` (values unchanged for minutes)."""
        return status_readings(self.status, self.naming, ts)[0]
