"""Streaming parser of Green Button (NAESB ESPI) interval data.

Two shapes are read, in any mix:

- containerized: an Atom `<feed>` whose `<entry>`s each carry one ESPI resource in `<content>`
  and tie resources together with `<link rel="self|up|related">` (not by nesting): an
  IntervalBlock's `up` is `<MeterReading>/IntervalBlock`, the MeterReading's `related` names
  its ReadingType;
- direct: bare ESPI resources (`<IntervalBlock>`, `<ReadingType>`... as the document or
  inside any wrapper) with no Atom links; these use the document's only ReadingType (ESPI
  defaults - Wh, x1, delivered - when it has none).

Values are `value * 10**powerOfTenMultiplier` in `uom` (only 72 = Wh is energy; other units,
e.g. gas, are skipped and counted). `flowDirection` 1 is delivered (import), 19 received
(export). Times are epoch seconds UTC, so DST needs no special care; `LocalTimeParameters`
is reported for display. Duplicated intervals (same direction and start within
`DUPLICATE_WINDOW_S` of the newest) are dropped and counted; gaps are counted.

XML is read with defusedxml's SAX parser: DTDs, entity declarations and external
references are refused (no billion laughs, no file or network reads).
"""

from __future__ import annotations

import xml.sax
import xml.sax.handler
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

import defusedxml.sax
from defusedxml import DefusedXmlException

from ...errors import ParseError

UOM_WH = 72
FLOW_DELIVERED = 1
FLOW_RECEIVED = 19
#: Duplicates are looked for among intervals this close to the newest one (bounded memory).
DUPLICATE_WINDOW_S = 40 * 86400
#: At most this many gaps are kept for the report (all are counted).
MAX_GAPS_KEPT = 50


class Direction(StrEnum):
    """Which way energy flowed through the meter."""

    DELIVERED = "delivered"  # grid to home: import
    RECEIVED = "received"  # home to grid: export


@dataclass(frozen=True, slots=True)
class IntervalReading:
    """Energy of one interval: `energy_wh` (>= 0) flowed `direction` in [start, start + duration_s)."""

    start: int  # epoch seconds UTC
    duration_s: int
    energy_wh: float
    direction: Direction

    @property
    def start_utc(self) -> datetime:
        """`start` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.start, UTC)


@dataclass(frozen=True, slots=True)
class ReadingType:
    """Scaling of a MeterReading's values (ESPI defaults: Wh, x10^0, delivered)."""

    uom: int = UOM_WH
    power_of_ten: int = 0
    flow_direction: int = FLOW_DELIVERED
    interval_length_s: int | None = None


@dataclass
class LocalTime:
    """`LocalTimeParameters`: standard offset and DST offset, seconds."""

    tz_offset_s: int = 0
    dst_offset_s: int = 0


@dataclass
class EspiReport:
    """What the parser saw besides readings: counts of oddities, never raised."""

    readings: int = 0
    duplicates: int = 0
    gaps: int = 0
    gap_spans: list[tuple[int, int]] = field(default_factory=list)  # first MAX_GAPS_KEPT (start, end) epoch s
    out_of_order: int = 0
    skipped_unit: int = 0  # readings in a unit that is not energy (gas, demand...)
    skipped_direction: int = 0  # readings of a flow direction that is neither 1 nor 19
    bad_values: int = 0  # IntervalReadings with a missing or non-numeric field
    local_time: LocalTime | None = None


_RESOURCES = frozenset({"IntervalBlock", "ReadingType", "MeterReading", "LocalTimeParameters"})


def _path(href: str) -> str:
    return urlsplit(href.strip()).path.rstrip("/")


def _local(name: str) -> str:
    return name.rpartition(":")[2]


class _DirectionState:
    """Duplicate and gap tracking of one direction in bounded memory."""

    def __init__(self) -> None:
        self.recent: set[int] = set()
        self.order: deque[int] = deque()
        self.newest_end: int | None = None


class _Handler(xml.sax.handler.ContentHandler):
    def __init__(self, parser: EspiParser) -> None:
        super().__init__()
        self.p = parser
        self.stack: list[str] = []
        self.text: list[str] = []
        self.entry_links: dict[str, list[str]] = {}
        self.fields: dict[str, str] = {}
        self.block: list[tuple[int, int, int]] | None = None  # raw (start, duration, value)
        self.reading: dict[str, str] = {}

    def startElement(self, name: str, attrs: xml.sax.xmlreader.AttributesImpl) -> None:  # noqa: N802 - SAX API
        local = _local(name)
        self.stack.append(local)
        self.text.clear()
        if local == "entry":
            self.entry_links = {}
        elif local == "link" and "entry" in self.stack:
            rel, href = attrs.get("rel", ""), attrs.get("href", "")
            if href:
                self.entry_links.setdefault(rel, []).append(_path(href))
        elif local in _RESOURCES:
            self.fields = {}
            if local == "IntervalBlock":
                self.block = []
                self.p._begin_block(dict(self.entry_links) if "entry" in self.stack else {})
        elif local == "IntervalReading":
            self.reading = {}

    def characters(self, content: str) -> None:
        self.text.append(content)

    def endElement(self, name: str) -> None:  # noqa: N802 - SAX API
        local = self.stack.pop()
        value = "".join(self.text).strip()
        self.text.clear()
        parent = self.stack[-1] if self.stack else ""
        if "IntervalReading" in self.stack:
            # timePeriod/start, timePeriod/duration and value of this reading
            if (local in ("start", "duration") and parent == "timePeriod") or local == "value":
                self.reading[local] = value
        elif local == "IntervalReading":
            self.p._reading(self.reading)
        elif local == "IntervalBlock":
            self.p._end_block()
        elif local in _RESOURCES:
            links = self.entry_links if "entry" in self.stack else {}
            self.p._resource(local, self.fields, links)
        elif value and parent in _RESOURCES:
            self.fields[local] = value


class EspiParser:
    """Pure streaming ESPI parser: `feed(bytes) -> list[IntervalReading]`, then `close()`.

    Readings come out as soon as their ReadingType is known (in document order);
    blocks whose ReadingType is not yet known wait until it is, or until `close`.
    Raises only `ParseError` (malformed XML, DTDs or entities); odd data is counted in
    `report` and carried on from.
    """

    def __init__(self) -> None:
        self.report = EspiReport()
        self._reading_types: dict[str, ReadingType] = {}
        self._meter_reading_type: dict[str, str] = {}  # MeterReading path -> ReadingType path
        self._pending: list[tuple[dict[str, list[str]], list[tuple[int, int, int]]]] = []
        self._block_links: dict[str, list[str]] = {}
        self._block_type: ReadingType | None = None
        self._block_raw: list[tuple[int, int, int]] = []
        self._out: list[IntervalReading] = []
        self._directions: dict[Direction, _DirectionState] = {d: _DirectionState() for d in Direction}
        self._failed: str | None = None
        self._closed = False
        self._sax = defusedxml.sax.make_parser()
        self._sax.setFeature(xml.sax.handler.feature_namespaces, False)
        self._sax.setFeature(xml.sax.handler.feature_external_ges, False)
        self._sax.setContentHandler(_Handler(self))

    # --- public API -----------------------------------------------------------------

    def feed(self, data: bytes) -> list[IntervalReading]:
        """Parse more bytes; the readings completed by them. Raises `ParseError`."""
        if self._failed is not None:
            raise ParseError(self._failed)
        if self._closed:
            raise ParseError("the parser is closed")
        try:
            # LookupError: a declaration naming an encoding Python has no codec for
            self._sax.feed(data)
        except (xml.sax.SAXException, DefusedXmlException, ValueError, UnicodeError, LookupError) as err:
            self._failed = f"invalid ESPI XML: {err}"
            raise ParseError(self._failed) from err
        out, self._out = self._out, []
        return out

    def close(self) -> list[IntervalReading]:
        """End of input: checks the document is complete; the readings still held back."""
        if self._closed:
            return []
        try:
            self._sax.close()
        except (xml.sax.SAXException, DefusedXmlException, ValueError, UnicodeError, LookupError) as err:
            self._failed = f"invalid ESPI XML: {err}"
            raise ParseError(self._failed) from err
        finally:
            self._closed = True
        fallback = next(iter(self._reading_types.values())) if len(self._reading_types) == 1 else ReadingType()
        for links, raw in self._pending:
            self._emit(self._type_for(links) or fallback, raw)
        self._pending.clear()
        out, self._out = self._out, []
        return out

    # --- called by the SAX handler ----------------------------------------------------

    def _type_for(self, links: dict[str, list[str]]) -> ReadingType | None:
        meter_reading = None
        for up in links.get("up", []):
            if up.endswith("/IntervalBlock"):
                meter_reading = up.removesuffix("/IntervalBlock")
        if meter_reading is None:
            for self_href in links.get("self", []):
                head, _, _ = self_href.rpartition("/IntervalBlock/")
                meter_reading = head or None
        if meter_reading is None:
            return None
        type_path = self._meter_reading_type.get(meter_reading)
        return None if type_path is None else self._reading_types.get(type_path)

    def _begin_block(self, links: dict[str, list[str]]) -> None:
        self._block_links = links
        self._block_type = self._type_for(links)
        self._block_raw = []

    def _reading(self, fields: dict[str, str]) -> None:
        try:
            raw = (int(fields["start"]), int(fields["duration"]), int(fields["value"]))
        except (KeyError, ValueError):
            self.report.bad_values += 1
            return
        if self._block_type is not None:
            self._emit(self._block_type, [raw])
        else:
            self._block_raw.append(raw)

    def _end_block(self) -> None:
        if self._block_raw:
            self._pending.append((self._block_links, self._block_raw))
        self._block_raw = []
        self._block_type = None

    def _resource(self, kind: str, fields: dict[str, str], links: dict[str, list[str]]) -> None:
        try:
            if kind == "ReadingType":
                reading_type = ReadingType(
                    uom=int(fields.get("uom", UOM_WH)),
                    power_of_ten=int(fields.get("powerOfTenMultiplier", 0)),
                    flow_direction=int(fields.get("flowDirection", FLOW_DELIVERED)),
                    interval_length_s=int(fields["intervalLength"]) if "intervalLength" in fields else None,
                )
                for self_href in links.get("self", []) or ["(direct)"]:
                    self._reading_types[self_href] = reading_type
                self._resolve_pending()
            elif kind == "MeterReading":
                for self_href in links.get("self", []):
                    for related in links.get("related", []):
                        if "/ReadingType/" in related or related.endswith("/ReadingType"):
                            self._meter_reading_type[self_href] = related
                self._resolve_pending()
            elif kind == "LocalTimeParameters":
                self.report.local_time = LocalTime(int(fields.get("tzOffset", 0)), int(fields.get("dstOffset", 0)))
        except ValueError:
            self.report.bad_values += 1

    def _resolve_pending(self) -> None:
        still: list[tuple[dict[str, list[str]], list[tuple[int, int, int]]]] = []
        for links, raw in self._pending:
            reading_type = self._type_for(links)
            if reading_type is None:
                still.append((links, raw))
            else:
                self._emit(reading_type, raw)
        self._pending = still

    def _emit(self, reading_type: ReadingType, raw: list[tuple[int, int, int]]) -> None:
        report = self.report
        if reading_type.uom != UOM_WH:
            report.skipped_unit += len(raw)
            return
        if reading_type.flow_direction == FLOW_DELIVERED:
            direction = Direction.DELIVERED
        elif reading_type.flow_direction == FLOW_RECEIVED:
            direction = Direction.RECEIVED
        else:
            report.skipped_direction += len(raw)
            return
        scale = 10.0**reading_type.power_of_ten
        state = self._directions[direction]
        for start, duration, value in raw:
            if duration <= 0 or value < 0:
                report.bad_values += 1
                continue
            if start in state.recent:
                report.duplicates += 1
                continue
            if state.newest_end is not None:
                if start > state.newest_end:
                    report.gaps += 1
                    if len(report.gap_spans) < MAX_GAPS_KEPT:
                        report.gap_spans.append((state.newest_end, start))
                elif start < state.newest_end and start + duration <= state.newest_end:
                    report.out_of_order += 1
            state.recent.add(start)
            state.order.append(start)
            end = start + duration
            if state.newest_end is None or end > state.newest_end:
                state.newest_end = end
            # forget starts far behind the newest: duplicates are looked for nearby only
            while state.order and state.order[0] < state.newest_end - DUPLICATE_WINDOW_S:
                state.recent.discard(state.order.popleft())
            report.readings += 1
            self._out.append(IntervalReading(start, duration, value * scale, direction))


def parse_bytes(data: bytes) -> tuple[list[IntervalReading], EspiReport]:
    """Parse a whole ESPI document at once. Raises `ParseError`."""
    parser = EspiParser()
    readings = parser.feed(data)
    readings.extend(parser.close())
    return readings, parser.report
