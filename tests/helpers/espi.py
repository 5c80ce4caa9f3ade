"""Writers of Green Button (ESPI) documents for tests: Atom feeds and direct resources.

Shapes follow the NAESB ESPI schema as published by the Green Button Alliance: resources in
Atom entries tied by `self`/`up`/`related` links (containerized) or bare (direct).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
BASE = "https://api.pge.com/GreenButtonConnect/espi/1_1/resource"

Interval = tuple[int, int, int]  # start epoch s, duration s, raw value


@dataclass
class MeterReadingSpec:
    """One MeterReading: its ReadingType fields and interval blocks."""

    mr_id: str
    uom: int = 72
    power_of_ten: int = 0
    flow_direction: int = 1
    interval_length: int = 3600
    blocks: list[list[Interval]] = field(default_factory=list)


def _reading_type(spec: MeterReadingSpec, prefix: str = "espi:") -> str:
    p = prefix
    return (
        f"<{p}ReadingType><{p}accumulationBehaviour>4</{p}accumulationBehaviour><{p}commodity>1</{p}commodity>"
        f"<{p}flowDirection>{spec.flow_direction}</{p}flowDirection>"
        f"<{p}intervalLength>{spec.interval_length}</{p}intervalLength><{p}kind>12</{p}kind>"
        f"<{p}powerOfTenMultiplier>{spec.power_of_ten}</{p}powerOfTenMultiplier><{p}uom>{spec.uom}</{p}uom>"
        f"</{p}ReadingType>"
    )


def _block(intervals: list[Interval], prefix: str = "espi:") -> str:
    p = prefix
    first, last = intervals[0], intervals[-1]
    parts = [
        f"<{p}IntervalBlock><{p}interval><{p}duration>{last[0] + last[1] - first[0]}</{p}duration>"
        f"<{p}start>{first[0]}</{p}start></{p}interval>"
    ]
    for start, duration, value in intervals:
        parts.append(
            f"<{p}IntervalReading><{p}cost>0</{p}cost><{p}timePeriod><{p}duration>{duration}</{p}duration>"
            f"<{p}start>{start}</{p}start></{p}timePeriod><{p}value>{value}</{p}value></{p}IntervalReading>"
        )
    parts.append(f"</{p}IntervalBlock>")
    return "".join(parts)


def _entry(self_href: str, content: str, up: str | None = None, related: Iterable[str] = ()) -> str:
    links = f'<link rel="self" href="{self_href}"/>'
    if up:
        links += f'<link rel="up" href="{up}"/>'
    links += "".join(f'<link rel="related" href="{href}"/>' for href in related)
    return f"<entry><id>urn:uuid:{zlib.crc32(self_href.encode()):08x}</id>{links}<content>{content}</content></entry>\n"


def atom_feed_chunks(
    readings: list[MeterReadingSpec],
    *,
    duplicate_block: tuple[int, int] | None = None,
    reading_types_last: bool = False,
    local_time: tuple[int, int] | None = (-28800, 3600),
) -> Iterator[str]:
    """A containerized feed, piece by piece (so a five-year file never sits in memory)."""
    up = f"{BASE}/Subscription/5/UsagePoint/1"
    yield f'<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="{ATOM}" xmlns:espi="{ESPI}">\n'
    yield "<id>urn:uuid:feed</id><title>Green Button Usage Feed</title>\n"
    yield _entry(
        up,
        "<espi:UsagePoint><espi:ServiceCategory><espi:kind>0</espi:kind></espi:ServiceCategory></espi:UsagePoint>",
        related=[f"{up}/MeterReading", f"{BASE}/LocalTimeParameters/1"],
    )
    if local_time is not None:
        yield _entry(
            f"{BASE}/LocalTimeParameters/1",
            "<espi:LocalTimeParameters><espi:dstEndRule>B40E2000</espi:dstEndRule><espi:dstOffset>"
            f"{local_time[1]}</espi:dstOffset><espi:dstStartRule>360E2000</espi:dstStartRule>"
            f"<espi:tzOffset>{local_time[0]}</espi:tzOffset></espi:LocalTimeParameters>",
        )
    types = [
        _entry(f"{BASE}/ReadingType/{spec.mr_id}", _reading_type(spec), up=f"{BASE}/ReadingType") for spec in readings
    ]
    if not reading_types_last:
        yield from types
    for index, spec in enumerate(readings):
        mr = f"{up}/MeterReading/{spec.mr_id}"
        yield _entry(mr, "<espi:MeterReading/>", up=f"{up}/MeterReading", related=[f"{BASE}/ReadingType/{spec.mr_id}"])
        for number, block in enumerate(spec.blocks):
            entry = _entry(f"{mr}/IntervalBlock/{number}", _block(block), up=f"{mr}/IntervalBlock")
            yield entry
            if duplicate_block == (index, number):
                yield entry
    if reading_types_last:
        yield from types
    yield "</feed>\n"


def direct_document(spec: MeterReadingSpec) -> str:
    """Direct form: bare ESPI resources, default namespace, no Atom links."""
    body = _reading_type(spec, "") + "".join(_block(block, "") for block in spec.blocks)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<MeterReading xmlns="{ESPI}">{body}</MeterReading>\n'


def intervals(start: int, count: int, duration: int, value: int | None = None) -> list[Interval]:
    """`count` consecutive intervals; values vary deterministically unless `value` is given."""
    return [
        (start + i * duration, duration, value if value is not None else 100 + (start // duration + i) % 37 * 10)
        for i in range(count)
    ]
