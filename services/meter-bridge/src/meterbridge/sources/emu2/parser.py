"""Streaming parser of the Rainforest XML API (EMU-2, RAVEn): bytes in, readings and device events out.

The device writes XML fragments back to back over USB serial, with no framing, no XML
declaration and no attributes, in Windows-1252. Every fragment is one root element whose
first child is `DeviceMacId`; children are flat `<Name>text</Name>` pairs; names are
case-insensitive. Scheduled pushes and command replies share the stream, so a fragment
can be cut off by the start of another (the device does not queue its writes).

`Emu2Parser.feed(chunk)` takes bytes in any chunking and returns what became complete:
it finds fragment starts and ends with a few compiled regular expressions over a bounded
buffer and keeps no element tree, so memory stays constant however long it runs. It
never expands entities or reads a DTD (no XML parser is involved), so hostile input
cannot make it allocate. Anything that cannot be turned into values comes out as a
`Garbled` event; the parser itself never raises.

Value rules (Rainforest XML API; ZigBee Smart Energy metering cluster):
- numbers are hex strings, signed two's complement: 32-bit for up to 8 digits (net
  export shows as e.g. `0xFFFFFFF0`), except that exactly 6 digits is the 24-bit
  `InstantaneousDemand` field as the RAVEn pads it; 9-16 digits are 64-bit;
- value = raw * Multiplier / Divisor, a Multiplier or Divisor of 0 meaning 1;
  `Demand` is in kW (published as W), summations in kWh;
- `Price` is raw / 10**TrailingDigits in the currency `Currency` (ISO 4217 number);
- `TimeStamp` counts seconds from 2000-01-01 00:00 UTC; `0xFFFFFFFF` (or no
  TimeStamp) means none, and the reading is stamped with the parser's clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ...errors import ParseError
from ...model import Quantity, Reading, Unit, utc_now

#: Root elements of the Rainforest XML API (RAVEn API r1.27 and the EMU-2 additions).
#: A start tag with one of these names starts a fragment wherever it appears, which is
#: how a fragment cut off by the next one is detected. Other names start a fragment
#: only when `DeviceMacId` follows (always the first child).
KNOWN_FRAGMENTS: tuple[str, ...] = (
    "InstantaneousDemand",
    "CurrentSummationDelivered",
    "CurrentPeriodUsage",
    "LastPeriodUsage",
    "PriceCluster",
    "BlockPriceDetail",
    "ConnectionStatus",
    "NetworkInfo",
    "DeviceInfo",
    "MeterList",
    "MeterInfo",
    "ScheduleInfo",
    "TimeCluster",
    "MessageCluster",
    "ProfileData",
)

#: A fragment longer than this (bytes, start tag to end tag) is junk: the longest real
#: one (ProfileData with its intervals) is well under 2 KiB.
MAX_FRAGMENT_BYTES = 8192
#: A name longer than this is not a tag name of this API.
_MAX_NAME = 64
#: Bytes kept from a scan that found nothing: enough to hold the longest fragment start
#: (`<` + name + `>` + whitespace + `<DeviceMacId>`) cut by the chunk boundary.
_TAIL_BYTES = 128

_NAME = rb"[A-Za-z][A-Za-z0-9_]{0,%d}" % (_MAX_NAME - 1)
_KNOWN_ALTERNATION = b"|".join(name.encode() for name in KNOWN_FRAGMENTS)
#: A fragment start: a known root, or any name followed by `DeviceMacId`.
_START = re.compile(
    rb"<(?:(" + _KNOWN_ALTERNATION + rb")\s*>|(" + _NAME + rb")\s*>(?=\s{0,16}<DeviceMacId\s*>))",
    re.IGNORECASE,
)
#: The end tag of any known fragment: while collecting one, the first such end tag is
#: either its own end or proof that another fragment started inside it.
_KNOWN_END = re.compile(rb"</(" + _KNOWN_ALTERNATION + rb")\s*>", re.IGNORECASE)
#: A child element. Case-sensitive on purpose: a start and end tag pair is written in
#: one case (IGNORECASE makes this, the hottest regex, twice as slow); names are then
#: compared lower-cased, so `<demand>` and `<Demand>` both work.
_CHILD = re.compile(rb"<(" + _NAME + rb")>([^<]*)</\1>")
#: Child names as the Rainforest XML API spells them. Names are case-insensitive, but a
#: fragment whose names are all spelled this way (every real one) is turned into its
#: fields by `dict()` alone; lower-casing every name in Python cost ~15% of the parse.
_FIELD_NAMES: frozenset[bytes] = frozenset(
    name.encode()
    for name in (
        "DeviceMacId", "MeterMacId", "TimeStamp", "Demand", "Multiplier", "Divisor", "DigitsRight",
        "DigitsLeft", "SuppressLeadingZero", "SummationDelivered", "SummationReceived", "Price",
        "Currency", "TrailingDigits", "Tier", "RateLabel", "Status", "Description", "ExtPanId",
        "Channel", "ShortAddr", "LinkStrength", "InstallCode", "LinkKey", "FWVersion", "HWVersion",
        "ImageType", "Manufacturer", "ModelId", "DateCode", "CurrentUsage", "LastUsage", "StartDate", "EndDate",
    )
)  # fmt: skip
#: A name in any case -> its spelling in `_FIELD_NAMES` (names not listed stay lower-cased).
_SPELLING: dict[bytes, bytes] = {name.lower(): name for name in _FIELD_NAMES}
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_PADDING = b" \t\r\n\x00\xff"  # some units pad DeviceInfo strings with raw 0xFF bytes
_BLANK = b" \t\r\n\x00"
_ENTITIES = ((b"&lt;", b"<"), (b"&gt;", b">"), (b"&quot;", b'"'), (b"&apos;", b"'"), (b"&amp;", b"&"))

_POWER = Quantity.POWER
_WATT = Unit.WATT

EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
NO_TIMESTAMP = 0xFFFFFFFF
_EPOCH_2000_S = EPOCH_2000.timestamp()

#: ISO 4217 numbers of the currencies utilities that hand out EMU-2s bill in.
CURRENCIES: dict[int, str] = {840: "USD", 124: "CAD", 826: "GBP", 978: "EUR", 36: "AUD", 554: "NZD"}


# -- what the parser returns ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The EMU-2/RAVEn itself (`DeviceInfo`). Install code and link key are secrets: not kept."""

    device_mac: str | None
    manufacturer: str | None
    model: str | None
    fw_version: str | None
    hw_version: str | None
    date_code: str | None


@dataclass(frozen=True, slots=True)
class MeterList:
    """The meters the device is joined to (`MeterList`), MACs as lower-case hex without `0x`."""

    device_mac: str | None
    meter_macs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """The Zigbee link to the meter (`ConnectionStatus`); `link_strength_pct` is 0-100."""

    meter_mac: str | None
    status: str | None
    description: str | None
    link_strength_pct: int | None

    @property
    def connected(self) -> bool:
        """True when the device reports the meter connected."""
        return (self.status or "").strip().lower() == "connected"


@dataclass(frozen=True, slots=True)
class PriceInfo:
    """What came with a `PriceCluster` besides the price: currency (ISO 4217 code or number), tier."""

    currency: str | None
    tier: int | None
    rate_label: str | None


@dataclass(frozen=True, slots=True)
class UnknownFragment:
    """A well-formed fragment of a name this parser does not know."""

    name: str


@dataclass(frozen=True, slots=True)
class OtherMeter:
    """A fragment about a meter other than the configured one (ignored)."""

    name: str
    meter_mac: str


@dataclass(frozen=True, slots=True)
class Garbled:
    """A fragment that was cut off, too long or had unusable values; `reason` says which."""

    name: str
    reason: str


#: Everything `Emu2Parser.feed` returns.
Emu2Event = Reading | DeviceInfo | MeterList | ConnectionStatus | PriceInfo | UnknownFragment | OtherMeter | Garbled


# -- value helpers (pure) ---------------------------------------------------------------


def _hex_digits(raw: bytes) -> bytes:
    digits = raw.strip(_PADDING)
    if digits[:2] in (b"0x", b"0X"):
        digits = digits[2:]
    # int() would also take signs, underscores and inner blanks: only bare hex digits pass
    if not digits or len(digits) > 16 or digits.translate(None, _HEX_DIGITS):
        raise ParseError(f"not a hex number: {raw[:20]!r}")
    return digits


def signed_hex(raw: bytes) -> int:
    """A hex field as a signed integer (see the module docstring); raises `ParseError`."""
    if raw.isalnum() and raw[:2] == b"0x" and len(raw) <= 18:
        # the common, clean `0x...` form: int() checks the digits (hot path)
        try:
            value = int(raw, 16)
        except ValueError:
            raise ParseError(f"not a hex number: {raw[:20]!r}") from None
        width = len(raw) - 2
    else:
        digits = _hex_digits(raw)
        value = int(digits, 16)
        width = len(digits)
    bits = 24 if width == 6 else 32 if width <= 8 else 64
    if value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def unsigned_hex(raw: bytes) -> int:
    """A hex field as an unsigned integer; raises `ParseError`."""
    if raw.isalnum() and raw[:2] == b"0x" and len(raw) <= 18:
        try:
            return int(raw, 16)
        except ValueError:
            raise ParseError(f"not a hex number: {raw[:20]!r}") from None
    return int(_hex_digits(raw), 16)


def timestamp(raw: bytes | None) -> datetime | None:
    """A Rainforest timestamp (seconds since 2000-01-01 UTC); None for none (`0xFFFFFFFF`).

    Raises `ParseError` for a value wider than the field's 32 bits (a garbled digit run:
    datetime would raise ValueError/OverflowError for it).
    """
    if not raw:
        return None
    seconds = unsigned_hex(raw)
    if seconds == NO_TIMESTAMP:
        return None
    if seconds > NO_TIMESTAMP:
        raise ParseError(f"timestamp wider than 32 bits: {raw[:20]!r}")
    return datetime.fromtimestamp(_EPOCH_2000_S + seconds, UTC)


def normalise_mac(mac: str) -> str:
    """A MAC or EUI-64 as lower-case hex without `0x`, `:` or `-`."""
    text = mac.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    return text.replace(":", "").replace("-", "")


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if b"&" in raw:
        for entity, char in _ENTITIES:
            raw = raw.replace(entity, char)
    return raw.strip(_PADDING).decode("cp1252", errors="replace").strip() or None


def _factor(fields: dict[bytes, bytes]) -> tuple[int, int]:
    """(Multiplier, Divisor) of a fragment, a 0 (or a missing field) meaning 1."""
    multiplier = unsigned_hex(fields[b"Multiplier"]) if fields.get(b"Multiplier") else 1
    divisor = unsigned_hex(fields[b"Divisor"]) if fields.get(b"Divisor") else 1
    return multiplier or 1, divisor or 1


def _required(fields: dict[bytes, bytes], key: bytes, label: str) -> bytes:
    value = fields.get(key)
    if not value:
        raise ParseError(f"no {label}")
    return value


# -- the parser -------------------------------------------------------------------------


class Emu2Parser:
    """Incremental parser of one EMU-2/RAVEn byte stream; see the module docstring.

    `meter_id` names the readings; with `meter_mac` set, fragments about another meter
    come out as `OtherMeter` instead of readings. `clock` stamps readings without a
    timestamp. `junk_bytes` counts non-blank bytes found outside any fragment.
    """

    def __init__(self, meter_id: str, meter_mac: str | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        self.meter_id = meter_id
        self.meter_mac = normalise_mac(meter_mac) if meter_mac else None
        self.clock = clock
        self.junk_bytes = 0
        self.fragments = 0
        self._buf = bytearray()
        # the fragment being collected: its root name, where its start tag and body begin,
        # and from where to resume scanning for its end (all offsets into _buf)
        self._root: bytes | None = None
        self._key = b""  # _root lower-cased
        self._end_tag: re.Pattern[bytes] | None = None
        self._start = 0
        self._body = 0
        self._scan = 0
        self._closers: dict[bytes, re.Pattern[bytes]] = {}
        self._factors: dict[tuple[bytes | None, bytes | None], tuple[int, int]] = {}
        self._handlers: dict[bytes, Callable[[dict[bytes, bytes], list[tuple[bytes, bytes]]], list[Emu2Event]]] = {
            b"instantaneousdemand": self._demand,
            b"currentsummationdelivered": self._summation,
            b"pricecluster": self._price,
            b"connectionstatus": self._connection,
            b"deviceinfo": self._device_info,
            b"meterlist": self._meter_list,
            b"currentperiodusage": self._current_period,
            b"lastperiodusage": self._last_period,
        }
        self._known = frozenset(name.lower().encode() for name in KNOWN_FRAGMENTS)
        self._ignored = self._known - set(self._handlers)

    @property
    def buffered(self) -> int:
        """Bytes held for a fragment not complete yet (bounded by `MAX_FRAGMENT_BYTES`)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Emu2Event]:
        """Add `data` and return the events of every fragment it completed, in stream order."""
        buf = self._buf
        buf += data
        size = len(buf)
        end_tag = self._end_tag
        close = None
        if end_tag is not None and size - self._start <= MAX_FRAGMENT_BYTES:
            # Fast path: most chunks only extend the fragment being collected.
            close = end_tag.search(buf, self._scan)
            if close is None:
                # A tag holds no `<`, so only an end tag starting at the last `<` can straddle
                # this chunk and the next: resume there (exact whatever the whitespace, and
                # cheaper than re-scanning a fixed overlap of the buffer on every chunk).
                last = buf.rfind(b"<", self._scan)
                self._scan = size if last < 0 else last
                return []
        out: list[Emu2Event] = []
        pos = 0
        while True:
            if self._root is None:
                start = _START.search(buf, pos)
                if start is None:
                    keep = max(pos, size - _TAIL_BYTES)
                    self._junk(buf, pos, keep)
                    pos = keep
                    break
                if start.start() > pos:
                    self._junk(buf, pos, start.start())
                self._root = bytes(start.group(1) or start.group(2))
                self._key = self._root.lower()
                end_tag = self._end_tag = self._closer(self._key)
                self._start = start.start()
                self._body = self._scan = start.end()
            root = self._root
            if close is None:  # (the fast path's search, when it found the end, is not repeated)
                assert end_tag is not None  # noqa: S101 - set with _root
                close = end_tag.search(buf, self._scan)
            if close is None:
                if size - self._start > MAX_FRAGMENT_BYTES:
                    out.append(Garbled(root.decode("ascii"), f"no end tag within {MAX_FRAGMENT_BYTES} bytes"))
                    self._root = self._end_tag = None
                    pos = self._body
                    continue
                last = buf.rfind(b"<", self._scan)
                self._scan = size if last < 0 else last
                pos = self._start
                break
            end, after = close.span()
            own = close.group(1).lower() == self._key
            close = None
            children = _CHILD.findall(buf, self._body, end)
            # Every `<` of a clean body belongs to a child's start or end tag; anything
            # else may be the start of a fragment that cut this one off (the rare path).
            if not own or buf.count(b"<", self._body, end) != 2 * len(children):
                cut = _START.search(buf, self._body, end)
                if cut is not None:
                    out.append(Garbled(root.decode("ascii"), "cut off by the start of another fragment"))
                    self._root = self._end_tag = None
                    pos = cut.start()
                    continue
                if not own:  # a stray end tag of another fragment: part of this body's junk
                    self._scan = after
                    continue
            self.fragments += 1
            out += self._fragment(root, self._key, children)
            self._root = self._end_tag = None
            pos = after
        if pos:
            del buf[:pos]
            self._start -= pos
            self._body -= pos
            self._scan -= pos
        return out

    def _junk(self, buf: bytearray, start: int, end: int) -> None:
        if end > start:
            self.junk_bytes += len(buf[start:end].strip(_BLANK))

    def _closer(self, root: bytes) -> re.Pattern[bytes]:
        """The end tag of `root` or of any known fragment."""
        key = root.lower()
        if key in self._known:
            return _KNOWN_END
        closer = self._closers.get(key)
        if closer is None:
            closer = re.compile(rb"</(" + _KNOWN_ALTERNATION + b"|" + re.escape(root) + rb")\s*>", re.IGNORECASE)
            if len(self._closers) >= 64:  # junk names must not grow this without bound
                self._closers.clear()
            self._closers[key] = closer
        return closer

    def _fragment(self, root: bytes, key: bytes, raw_children: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        handler = self._handlers.get(key)
        if handler is None:
            return [] if key in self._ignored else [UnknownFragment(root.decode("ascii"))]
        fields = dict(raw_children)
        if not _FIELD_NAMES.issuperset(fields):  # a name spelled otherwise: the rare path
            fields = {_SPELLING.get(low := name.lower(), low): value for name, value in raw_children}
        mac = fields.get(b"MeterMacId")
        if self.meter_mac is not None and mac:
            other = normalise_mac(mac.strip(_PADDING).decode("ascii", errors="replace"))
            if other != self.meter_mac:
                return [OtherMeter(root.decode("ascii"), other)]
        try:
            return handler(fields, raw_children)
        except ParseError as err:
            return [Garbled(root.decode("ascii"), str(err))]

    def _scale(self, fields: dict[bytes, bytes], raw: int) -> float:
        # a device sends the same Multiplier/Divisor pair every time: parse it once
        key = (fields.get(b"Multiplier"), fields.get(b"Divisor"))
        factor = self._factors.get(key)
        if factor is None:
            factor = _factor(fields)
            if len(self._factors) >= 16:
                self._factors.clear()
            self._factors[key] = factor
        # multiply before dividing: 290 * 1 / 1000 is exactly 0.29, 290 * 0.001 is not
        return raw * factor[0] / factor[1]

    def _ts(self, fields: dict[bytes, bytes]) -> datetime:
        return timestamp(fields.get(b"TimeStamp")) or self.clock()

    def _demand(self, fields: dict[bytes, bytes], _: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        raw = signed_hex(_required(fields, b"Demand", "Demand"))
        watts = self._scale(fields, raw * 1000)  # the device reports kW
        # Reading() with the unit, not Reading.of: ~10% of a demand fragment's cost (the
        # hottest handler), and Reading still checks the unit against the quantity
        return [Reading(self.meter_id, _POWER, watts, _WATT, self._ts(fields))]

    def _summation(self, fields: dict[bytes, bytes], _: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        ts = self._ts(fields)
        out: list[Emu2Event] = []
        for key, quantity in (
            (b"SummationDelivered", Quantity.ENERGY_IMPORT),
            (b"SummationReceived", Quantity.ENERGY_EXPORT),
        ):
            raw = fields.get(key)
            if not raw:
                continue
            kwh = self._scale(fields, signed_hex(raw))
            if kwh < 0:
                raise ParseError(f"negative total {kwh!r} kWh in {key.decode().lower()}")
            out.append(Reading.of(self.meter_id, quantity, kwh, ts))
        if not out:
            raise ParseError("no SummationDelivered or SummationReceived")
        return out

    def _current_period(self, fields: dict[bytes, bytes], _: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        # RAVEn XML API: CurrentUsage (kWh after Multiplier/Divisor) since StartDate, the start
        # of the accumulation period set with set_current_period / close_current_period
        kwh = self._scale(fields, signed_hex(_required(fields, b"CurrentUsage", "CurrentUsage")))
        ts = self._ts(fields)
        out: list[Emu2Event] = [Reading.of(self.meter_id, Quantity.ENERGY_PERIOD, kwh, ts)]
        start = timestamp(fields.get(b"StartDate"))
        if start is not None:
            out.append(Reading.of(self.meter_id, Quantity.ENERGY_PERIOD_START, start.timestamp(), ts))
        return out

    def _last_period(self, fields: dict[bytes, bytes], _: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        # LastUsage of the previous period, which ran from StartDate to EndDate (no TimeStamp)
        kwh = self._scale(fields, signed_hex(_required(fields, b"LastUsage", "LastUsage")))
        ts = timestamp(fields.get(b"EndDate")) or self.clock()
        return [Reading.of(self.meter_id, Quantity.ENERGY_LAST_PERIOD, kwh, ts)]

    def _price(self, fields: dict[bytes, bytes], _: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        raw = signed_hex(_required(fields, b"Price", "Price"))
        digits = unsigned_hex(fields[b"TrailingDigits"]) if fields.get(b"TrailingDigits") else 0
        if digits > 12:
            raise ParseError(f"TrailingDigits {digits} out of range")
        currency: str | None = None
        if fields.get(b"Currency"):
            number = unsigned_hex(fields[b"Currency"])
            currency = CURRENCIES.get(number, str(number))
        tier = unsigned_hex(fields[b"Tier"]) if fields.get(b"Tier") else None
        return [
            Reading.of(self.meter_id, Quantity.PRICE, raw / 10**digits, self._ts(fields)),
            PriceInfo(currency, tier, _text(fields.get(b"RateLabel"))),
        ]

    def _connection(self, fields: dict[bytes, bytes], _: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        strength: int | None = None
        if fields.get(b"LinkStrength"):
            strength = max(0, min(100, unsigned_hex(fields[b"LinkStrength"])))
        mac = fields.get(b"MeterMacId")
        status = ConnectionStatus(
            meter_mac=normalise_mac(mac.strip(_PADDING).decode("ascii", errors="replace")) if mac else None,
            status=_text(fields.get(b"Status")),
            description=_text(fields.get(b"Description")),
            link_strength_pct=strength,
        )
        out: list[Emu2Event] = [status]
        if strength is not None:
            out.append(Reading.of(self.meter_id, Quantity.LINK_QUALITY, float(strength), self.clock()))
        return out

    def _device_info(self, fields: dict[bytes, bytes], _: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        mac = _text(fields.get(b"DeviceMacId"))
        return [
            DeviceInfo(
                device_mac=normalise_mac(mac) if mac else None,
                manufacturer=_text(fields.get(b"Manufacturer")),
                model=_text(fields.get(b"ModelId")),
                fw_version=_text(fields.get(b"FWVersion")),
                hw_version=_text(fields.get(b"HWVersion")),
                date_code=_text(fields.get(b"DateCode")),
            )
        ]

    def _meter_list(self, fields: dict[bytes, bytes], children: list[tuple[bytes, bytes]]) -> list[Emu2Event]:
        mac = _text(fields.get(b"DeviceMacId"))
        meters = tuple(
            normalise_mac(text) for name, value in children if name.lower() == b"metermacid" and (text := _text(value))
        )
        return [MeterList(normalise_mac(mac) if mac else None, meters)]


# -- commands (the other direction) ------------------------------------------------------


def command(name: str, **args: str) -> bytes:
    """One Rainforest XML API command, e.g. `command("set_schedule", Event="demand", ...)`."""
    parts = [f"<Command><Name>{name}</Name>"]
    parts += [f"<{key}>{value}</{key}>" for key, value in args.items()]
    parts.append("</Command>\r\n")
    return "".join(parts).encode("ascii")
