"""Pure reading of Tasmota's own discovery messages (hatasmota's DISCOVERY.md; Tasmota xdrv_12_discovery).

- `<prefix>/<MAC>/config` (retained): the device: `mac`, `dn` (device name), `md` (module or
  template), `sw` (firmware), `t` (`%topic%`), `hn` (host name), `ft` (full topic, default
  `%prefix%/%topic%/`), `tp` (the `cmnd`, `stat`, `tele` prefixes), `onln`/`ofln` (the LWT's
  payloads). An empty payload means the device withdrew its discovery.
- `<prefix>/<MAC>/sensors` (retained): `{"sn": <a SENSOR telemetry message>, "ver": 1}`; a
  device with an energy monitor has `sn.ENERGY` with the keys of its `tele/.../SENSOR`
  (`Power`, `Total`, `Voltage`, `Current`, `Factor`: numbers, or lists on a multi-channel meter).

Nothing here logs or does I/O; every function raises only `ParseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...errors import ParseError
from ..jsonpayload import load_object

_MAC = re.compile(r"^[0-9A-Fa-f]{12}$")
#: The tokens of a FullTopic we can fill in (Tasmota's docs, MQTT "FullTopic").
_TOKENS = re.compile(r"%(prefix|topic|hostname|id)%")


@dataclass(frozen=True, slots=True)
class TasmotaDevice:
    """One Tasmota device as its discovery config describes it."""

    mac: str
    topic: str
    name: str
    model: str | None
    sw_version: str | None
    #: `tele/<topic>/` for the default FullTopic: where `SENSOR` and `LWT` are.
    tele: str
    online: str = "Online"
    offline: str = "Offline"


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def parse_config(payload: bytes) -> TasmotaDevice | None:
    """The device a `config` message describes; None for an empty payload (discovery withdrawn)."""
    if not payload.strip():
        return None
    body = load_object(payload)
    mac, topic = _text(body, "mac"), _text(body, "t")
    if mac is None or not _MAC.match(mac):
        raise ParseError(f"config: `mac` is not 12 hex digits: {str(body.get('mac'))[:20]!r}")
    if topic is None or re.search(r"[#+]", topic):
        raise ParseError("config: `t` (the device's %topic%) is missing or has an MQTT wildcard")
    prefixes = body.get("tp")
    tele = prefixes[2] if isinstance(prefixes, list) and len(prefixes) > 2 and isinstance(prefixes[2], str) else "tele"
    full = _text(body, "ft") or "%prefix%/%topic%/"
    values = {"prefix": tele, "topic": topic, "hostname": _text(body, "hn") or "", "id": mac[-6:].upper()}
    tele_topic = _TOKENS.sub(lambda match: values[match.group(1)], full)
    if "%" in tele_topic or re.search(r"[#+]", tele_topic):
        raise ParseError(f"config: full topic {full!r} has a token this reader does not know")
    if not tele_topic.endswith("/"):
        tele_topic += "/"
    return TasmotaDevice(
        mac=mac.upper(),
        topic=topic,
        name=_text(body, "dn") or topic,
        model=_text(body, "md"),
        sw_version=_text(body, "sw"),
        tele=tele_topic,
        online=_text(body, "onln") or "Online",
        offline=_text(body, "ofln") or "Offline",
    )


def energy_channels(payload: bytes) -> int:
    """How many energy-monitor channels a `sensors` message announces: 0 none, 1 one, n a list of n."""
    if not payload.strip():
        return 0
    body = load_object(payload)
    sensors = body.get("sn")
    if not isinstance(sensors, dict):
        raise ParseError("sensors: `sn` is not an object")
    energy = sensors.get("ENERGY")
    if not isinstance(energy, dict):
        return 0
    power = energy.get("Power", energy.get("Total"))
    if isinstance(power, list):
        return len(power)
    return 1
