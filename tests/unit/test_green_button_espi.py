"""ESPI parser: fixture files with expected hour sums, hostile XML, property tests, chunking."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.espi import MeterReadingSpec, atom_feed_chunks, intervals
from meterbridge.errors import ParseError
from meterbridge.sources.green_button.espi import Direction, EspiParser, parse_bytes
from meterbridge.sources.green_button.importer import ImportSummary, parse_stream

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "green_button"
CASES = sorted(p.stem for p in FIXTURES.glob("*.xml"))


def _summary(data: bytes) -> ImportSummary:
    return parse_stream(io.BytesIO(data))


def test_dst_days_have_23_and_25_hours_in_utc() -> None:
    spring = _summary((FIXTURES / "direct_hourly_spring_dst.xml").read_bytes())
    fall = _summary((FIXTURES / "feed_15min_fall_dst_received_duplicate.xml").read_bytes())
    assert len(spring.hours[Direction.DELIVERED].kwh) == 23
    assert len(fall.hours[Direction.DELIVERED].kwh) == 25
    assert fall.report.local_time is not None
    assert fall.report.local_time.tz_offset_s == -28800


@pytest.mark.parametrize(
    "payload",
    [
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        b"<feed><entry>",  # cut short: the error comes at close
        b"\x00\xff garbage",
        # an unknown encoding made expat's codec lookup raise LookupError out of feed (found by
        # tests/reliability/test_fuzz_parsers.py)
        b'<?xml version="1.0" encoding="UPF-8"?><feed/>',
    ],
)
def test_hostile_or_broken_xml_raises_parse_error(payload: bytes) -> None:
    with pytest.raises(ParseError):
        parse_bytes(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    parser = EspiParser()
    try:
        parser.feed(data)
        parser.close()
    except ParseError:
        pass


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=30))
def test_chunking_does_not_change_the_readings(cuts: list[int]) -> None:
    data = (FIXTURES / "feed_15min_fall_dst_received_duplicate.xml").read_bytes()
    whole, _ = parse_bytes(data)
    parser = EspiParser()
    pieces: list[object] = []
    position = 0
    for cut in cuts:
        pieces.extend(parser.feed(data[position : position + cut]))
        position += cut
    pieces.extend(parser.feed(data[position:]))
    pieces.extend(parser.close())
    assert pieces == whole


def test_values_are_scaled_by_power_of_ten() -> None:
    spec = MeterReadingSpec("1", power_of_ten=-3, blocks=[intervals(1700000000, 2, 3600, value=1500)])
    readings, report = parse_bytes("".join(atom_feed_chunks([spec])).encode())
    assert [r.energy_wh for r in readings] == [1.5, 1.5]
    assert report.readings == 2
