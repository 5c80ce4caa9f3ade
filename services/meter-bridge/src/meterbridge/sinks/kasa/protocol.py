"""The Kasa "legacy" (IOT, port 9999) wire protocol: pure functions, no I/O.

- Cipher: XOR autokey starting at 171: each ciphertext byte is the key for the next.
- TCP: every message is a 4-byte big-endian length, then the ciphertext. UDP carries
  the ciphertext alone.
- A request is a JSON object `{module: {method: params}}`; the reply mirrors it with each
  method's result. Answered: `system.get_sysinfo`, `emeter.get_realtime` (v1 names
  `power`/`voltage`/`current`/`total` and v2 names `power_mw`/`voltage_mv`/`current_ma`/
  `total_wh` together, as SenseLink does), and `emeter.get_daystat`/`get_monthstat` (empty:
  no history is kept). Unknown modules get `err_code -1`. Every method that is not a
  `get_*` (relay, reboot, cloud binding, LED...) is refused with `err_code -2`: the plugs
  are read-only.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from ...errors import ParseError

#: First key of the autokey cipher.
INITIAL_KEY = 171
#: Largest TCP message accepted (real requests are a few hundred bytes).
MAX_FRAME_BYTES = 16 * 1024

_LENGTH = struct.Struct(">I")

MODEL = "HS110(US)"
DEVICE_TYPE = "IOT.SMARTPLUGSWITCH"
FEATURE = "TIM:ENE"
SW_VERSION = "1.2.6 Build 200727 Rel.121701"
HW_VERSION = "1.0"
DEV_NAME = "Wi-Fi Smart Plug With Energy Monitoring"

ERR_MODULE = {"err_code": -1, "err_msg": "module not support"}
ERR_METHOD = {"err_code": -2, "err_msg": "member not support"}


def encrypt(plaintext: bytes) -> bytes:
    """Ciphertext of `plaintext` (no length prefix)."""
    key = INITIAL_KEY
    out = bytearray(len(plaintext))
    for index, byte in enumerate(plaintext):
        key ^= byte
        out[index] = key
    return bytes(out)


def decrypt(ciphertext: bytes) -> bytes:
    """Plaintext of `ciphertext` (no length prefix)."""
    key = INITIAL_KEY
    out = bytearray(len(ciphertext))
    for index, byte in enumerate(ciphertext):
        out[index] = key ^ byte
        key = byte
    return bytes(out)


def frame(plaintext: bytes) -> bytes:
    """A TCP message: big-endian length, then the ciphertext."""
    return _LENGTH.pack(len(plaintext)) + encrypt(plaintext)


class FrameDecoder:
    """Splits a TCP byte stream into decrypted messages; keeps partial data between feeds.

    Raises `ParseError` when a length prefix exceeds `max_bytes` (the stream cannot be
    resynchronised after that: the caller closes the connection).
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max_bytes = max_bytes

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data`; return every message it completes, decrypted, oldest first."""
        self._buffer += data
        messages: list[bytes] = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self._max_bytes:
                self._buffer.clear()
                raise ParseError(f"TCP message of {length} bytes exceeds {self._max_bytes}")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            messages.append(decrypt(bytes(self._buffer[_LENGTH.size : end])))
            del self._buffer[:end]
        return messages


@dataclass(frozen=True, slots=True)
class PlugSnapshot:
    """What one plug reports at one instant.

    `power_w` W (import positive), `voltage_v` V, `current_a` A, `total_kwh` kWh
    (non-negative running total), `on_time_s` seconds since the plug came up.
    """

    alias: str
    mac: str
    device_id: str
    hw_id: str
    power_w: float
    voltage_v: float
    current_a: float
    total_kwh: float
    on_time_s: int = 0


def sysinfo(plug: PlugSnapshot) -> dict[str, Any]:
    """`system.get_sysinfo` of `plug`, shaped like a real HS110's."""
    return {
        "sw_ver": SW_VERSION,
        "hw_ver": HW_VERSION,
        "type": DEVICE_TYPE,
        "model": MODEL,
        "mac": plug.mac,
        "dev_name": DEV_NAME,
        "alias": plug.alias,
        "relay_state": 1,
        "on_time": plug.on_time_s,
        "active_mode": "none",
        "feature": FEATURE,
        "updating": 0,
        "icon_hash": "",
        "rssi": -50,
        "led_off": 0,
        "latitude": 0,
        "longitude": 0,
        "deviceId": plug.device_id,
        "hwId": plug.hw_id,
        "fwId": "0" * 32,
        "oemId": "0" * 32,
        "err_code": 0,
    }


def realtime(plug: PlugSnapshot) -> dict[str, Any]:
    """`emeter.get_realtime` of `plug`, with both the v1 and the v2 (milli-unit) names."""
    return {
        "power": plug.power_w,
        "voltage": plug.voltage_v,
        "current": plug.current_a,
        "total": plug.total_kwh,
        "power_mw": round(plug.power_w * 1000),
        "voltage_mv": round(plug.voltage_v * 1000),
        "current_ma": round(plug.current_a * 1000),
        "total_wh": round(plug.total_kwh * 1000),
        "err_code": 0,
    }


@dataclass(slots=True)
class Response:
    """The reply to one request and what was refused in it (`module.method` names)."""

    payload: dict[str, Any]
    refused: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        """The reply as compact JSON bytes (before encryption)."""
        return json.dumps(self.payload, separators=(",", ":")).encode()


def parse_request(plaintext: bytes) -> dict[str, Any]:
    """The request object in `plaintext`; raises `ParseError` unless it is a JSON object."""
    try:
        request = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ParseError(f"request is not JSON: {err}") from err
    if not isinstance(request, dict):
        raise ParseError(f"request is a JSON {type(request).__name__}, not an object")
    return request


def _answer(module: str, method: str, plug: PlugSnapshot) -> dict[str, Any] | None:
    if module == "system" and method == "get_sysinfo":
        return sysinfo(plug)
    if module == "emeter":
        if method == "get_realtime":
            return realtime(plug)
        if method == "get_daystat":
            return {"day_list": [], "err_code": 0}
        if method == "get_monthstat":
            return {"month_list": [], "err_code": 0}
    return None


def respond(request: dict[str, Any], plug: PlugSnapshot) -> Response:
    """The reply of `plug` to `request`: a pure function of the two."""
    response = Response({})
    for module, methods in request.items():
        if module == "context":  # addressing for multi-outlet strips: nothing to answer
            continue
        if not isinstance(methods, dict) or module not in ("system", "emeter"):
            if isinstance(methods, dict):
                response.refused += [f"{module}.{m}" for m in methods if not str(m).startswith("get_")]
            response.unknown.append(module)
            response.payload[module] = dict(ERR_MODULE)
            continue
        answers: dict[str, Any] = {}
        for method in methods:
            result = _answer(module, method, plug)
            if result is None:
                if not str(method).startswith("get_"):
                    response.refused.append(f"{module}.{method}")
                    result = {"err_code": -2, "err_msg": "read-only emulated plug"}
                else:
                    response.unknown.append(f"{module}.{method}")
                    result = dict(ERR_METHOD)
            answers[str(method)] = result
        response.payload[module] = answers
    return response


def respond_bytes(plaintext: bytes, plug: PlugSnapshot) -> Response:
    """`respond` to a decrypted request; raises `ParseError` when it is not a JSON object."""
    return respond(parse_request(plaintext), plug)
