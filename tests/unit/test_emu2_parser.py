"""The EMU-2 / RAVEn parser: recorded-shape fixture streams, value rules, properties."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.emu2_fixtures import parse
from meterbridge.errors import ParseError
from meterbridge.model import Quantity, Reading
from meterbridge.sources.emu2.parser import (
    MAX_FRAGMENT_BYTES,
    Emu2Event,
    Emu2Parser,
    Garbled,
    command,
    signed_hex,
    timestamp,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "emu2"
STREAMS = sorted(FIXTURES.glob("*.xml"))


def test_every_fixture_has_expectations() -> None:
    """Adding a device stream means adding its expected readings beside it."""
    assert STREAMS
    for path in STREAMS:
        assert path.with_suffix(".json").is_file(), path


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"0x001540", 5440),
        (b"0xFFFFFFF0", -16),  # net export, EMU-2 32-bit field
        (b"0xfffffa24", -1500),
        (b"0xfffa24", -1500),  # the RAVEn's 24-bit demand field
        (b"0x7fffffff", 2**31 - 1),
        (b"0x000000000096d6d2", 9885394),
        (b"0xffffffffffffffff", -1),
        (b"1540", 5440),
        (b" 0x10\xff ", 16),
    ],
)
def test_signed_hex(raw: bytes, value: int) -> None:
    """Hex fields are signed two's complement at the width the device writes."""
    assert signed_hex(raw) == value


@pytest.mark.parametrize("raw", [b"", b"0x", b"-0x10", b"0x1_0", b"0x12G4", b"0x" + b"1" * 17, b"+12"])
def test_signed_hex_rejects(raw: bytes) -> None:
    """What int() would wrongly accept (signs, underscores) is not a device number."""
    from meterbridge.errors import ParseError

    with pytest.raises(ParseError):
        signed_hex(raw)


def test_timestamp_epoch_and_none() -> None:
    """Timestamps count from 2000-01-01 UTC; 0xFFFFFFFF means none."""
    assert timestamp(b"0x00000000") == datetime(2000, 1, 1, tzinfo=UTC)
    assert timestamp(b"0x25117e9f") == datetime(2019, 9, 15, 22, 58, 39, tzinfo=UTC)
    assert timestamp(b"0xFFFFFFFF") is None
    assert timestamp(None) is None


def test_timestamp_wider_than_32_bits_is_a_parse_error_not_a_crash() -> None:
    """Found by tests/reliability/test_fuzz_parsers.py: a garbled 16-digit timestamp made
    datetime raise ValueError out of `feed`; now the fragment is reported as garbled."""
    with pytest.raises(ParseError):
        timestamp(b"0x00000025117e9f11")
    fragment = (FIXTURES / "demand_import.xml").read_bytes()
    bad = fragment.replace(b"<TimeStamp>0x", b"<TimeStamp>0x00000000ff", 1)
    assert bad != fragment
    events = Emu2Parser("m").feed(bad)
    assert any(isinstance(e, Garbled) for e in events)
    assert not any(isinstance(e, Reading) for e in events)


def test_command_bytes() -> None:
    """Commands are Rainforest XML API `<Command>` fragments."""
    assert command("set_schedule", Event="demand", Frequency="0x000A", Enabled="Y") == (
        b"<Command><Name>set_schedule</Name><Event>demand</Event><Frequency>0x000A</Frequency>"
        b"<Enabled>Y</Enabled></Command>\r\n"
    )


def test_unterminated_fragment_is_bounded() -> None:
    """A fragment whose end never comes is dropped after MAX_FRAGMENT_BYTES: memory stays bounded."""
    parser = Emu2Parser("m")
    events: list[Emu2Event] = parser.feed(b"<InstantaneousDemand><DeviceMacId>0x01</DeviceMacId>")
    for _ in range(200):
        events += parser.feed(b"<Demand>0x10</Demand>" * 4)
        assert parser.buffered <= MAX_FRAGMENT_BYTES + 200
    assert any(isinstance(e, Garbled) and "no end tag" in e.reason for e in events)
    tail = parser.feed(FIXTURES.joinpath("demand_import.xml").read_bytes())
    assert [e.value for e in tail if isinstance(e, Reading)] == [5440.0]


def test_constant_memory_over_many_fragments() -> None:
    """The buffer never holds more than one fragment, however many pass through."""
    one = FIXTURES.joinpath("demand_import.xml").read_bytes()
    parser = Emu2Parser("m")
    stream = one * 2000
    count = 0
    for pos in range(0, len(stream), 64):
        count += len(parser.feed(stream[pos : pos + 64]))
        assert parser.buffered <= len(one) + 64
    assert count == 2000


# -- properties -------------------------------------------------------------------------

_TOKENS = [
    b"<",
    b">",
    b"</",
    b"\xff",
    b"\x00",
    b"\r\n",
    b"<InstantaneousDemand>",
    b"</InstantaneousDemand>",
    b"<DeviceMacId>0x01</DeviceMacId>",
    b"<Demand>0xFFFFFFFF</Demand>",
    b"<Divisor>0x0</Divisor>",
    b"<CurrentSummationDelivered>",
    b"<SummationDelivered>0x10</SummationDelivered>",
    b"<Foo>",
    b"<DeviceInfo>",
    b"&amp;",
    b"0x",
]
_ARBITRARY = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(_TOKENS)), max_size=60).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=_ARBITRARY, cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=20))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    """Whatever comes off the wire, feed returns events and the buffer stays bounded."""
    parser = Emu2Parser("m", meter_mac="0x00078100011a4c66")
    pos = 0
    for size in [*cuts, len(data)]:
        parser.feed(data[pos : pos + size])
        pos += size
        assert parser.buffered <= MAX_FRAGMENT_BYTES + len(data)


_GOOD = (FIXTURES / "demand_export_negative.xml").read_bytes()
# Garbage that cannot itself start a fragment: no `<` followed by a name (stray end tags are fine).
_GARBAGE = st.lists(
    st.one_of(
        st.binary(max_size=30).map(lambda b: b.replace(b"<", b"")), st.sampled_from([b"\xff", b"</Demand>", b"</x>"])
    ),
    max_size=10,
).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(before=_GARBAGE, after=_GARBAGE, chunk=st.integers(min_value=1, max_value=100))
def test_fragments_found_inside_garbage(before: bytes, after: bytes, chunk: int) -> None:
    """Valid fragments surrounded by garbage are still found, in any chunking."""
    stream = before + _GOOD + after
    parser = Emu2Parser("m")
    events: list[Emu2Event] = []
    for pos in range(0, len(stream), chunk):
        events += parser.feed(stream[pos : pos + chunk])
    powers = [e.value for e in events if isinstance(e, Reading) and e.quantity is Quantity.POWER]
    assert powers == [-1500.0, -1500.0, -2000.0]


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=60))
def test_chunking_invariance(cuts: list[int]) -> None:
    """Feeding the ugliest stream in random chunks gives the same events as feeding it whole."""
    stream = (FIXTURES / "ugly_stream.xml").read_bytes()
    assert parse(stream, cuts) == parse(stream)


@settings(max_examples=200, deadline=None)
@given(watts=st.integers(min_value=-(2**31) // 1000, max_value=(2**31 - 1) // 1000))
def test_demand_in_watts_is_exact(watts: int) -> None:
    """A demand of N W (raw N with Divisor 1000, kW) comes out as exactly N.0 W, import or export."""
    raw = f"0x{watts & 0xFFFFFFFF:08x}"
    fragment = (
        f"<InstantaneousDemand><DeviceMacId>0x01</DeviceMacId><Demand>{raw}</Demand>"
        "<Multiplier>0x00000001</Multiplier><Divisor>0x000003e8</Divisor></InstantaneousDemand>"
    ).encode()
    (reading,) = Emu2Parser("m").feed(fragment)
    assert isinstance(reading, Reading)
    assert reading.value == float(watts)


def test_end_tag_with_long_whitespace_across_chunks() -> None:
    """An end tag longer than any fixed overlap (`</Name` + 120 blanks + `>`) is found in any
    chunking: the search resumes at the last `<` (a fixed 96-byte overlap lost this fragment)."""
    fragment = (
        b"<InstantaneousDemand><DeviceMacId>0x01</DeviceMacId><Demand>0x10</Demand>"
        b"</InstantaneousDemand" + b" " * 120 + b">"
    )
    assert parse(fragment) == parse(fragment, [16] * (len(fragment) // 16))
    assert [e["value"] for e in parse(fragment, [16] * (len(fragment) // 16))] == [16000.0]
