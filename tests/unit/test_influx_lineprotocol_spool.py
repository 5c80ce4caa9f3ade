"""The pure parts of the InfluxDB sink: line protocol schema, spool, failure classification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point

from meterbridge.model import MeterDescription, Quantity, Reading
from meterbridge.sinks.influx.lineprotocol import Line, SeriesTags, encode, line
from meterbridge.sinks.influx.sink import classify
from meterbridge.sinks.influx.spool import Spool
from meterbridge.sinks.influx.writer import WriteRejectedError, retry_after_seconds

TS = datetime(2026, 11, 21, 20, 0, 0, 123000, tzinfo=UTC)


def test_schema_measurement_per_family_tags_and_fields() -> None:
    readings = [
        Reading.of("grid_a", Quantity.POWER, 512.0, TS),
        Reading.of("grid_a", Quantity.VOLTAGE, 231.2, TS),
        Reading.of("grid_a", Quantity.POWER, -40.5, TS + timedelta(seconds=1)),
    ]
    desc = MeterDescription("grid_a", "Grid A", "shelly", phase="a", via="pro3em")
    lines = encode(readings, "home", {"grid_a": desc})
    assert [line.text for line in lines] == [
        "shelly,meter=grid_a,phase=a,site=home,source=pro3em power=512,voltage=231.2 1795291200123",
        "shelly,meter=grid_a,phase=a,site=home,source=pro3em power=-40.5 1795291201123",
    ]
    assert [line.readings for line in lines] == [2, 1]


def test_environment_quantities_have_their_own_measurement() -> None:
    """Issue 20: room and heat-pump values go to `environment`, beside the meter's electricity line."""
    readings = [
        Reading.of("heatpump", Quantity.POWER, 1200.0, TS),
        Reading.of("heatpump", Quantity.FLOW_TEMPERATURE, 45.5, TS),
        Reading.of("heatpump", Quantity.RETURN_TEMPERATURE, 39.0, TS),
        Reading.of("heatpump", Quantity.HEAT_ENERGY, 3210.5, TS),
        Reading.of("lounge", Quantity.TEMPERATURE, 20.5, TS),
        Reading.of("lounge", Quantity.HUMIDITY, 55.0, TS),
        Reading.of("lounge", Quantity.CO2, 812.0, TS),
    ]
    descriptions = {
        "heatpump": MeterDescription("heatpump", "Heat pump", "mqtt"),
        "lounge": MeterDescription("lounge", "Lounge", "zigbee2mqtt"),
    }
    assert [line.text for line in encode(readings, "home", descriptions)] == [
        "mqtt,meter=heatpump,site=home,source=heatpump power=1200 1795291200123",
        "environment,meter=heatpump,site=home,source=heatpump "
        "flow_temperature=45.5,heat_energy=3210.5,return_temperature=39 1795291200123",
        "environment,meter=lounge,site=home,source=lounge co2=812,humidity=55,temperature=20.5 1795291200123",
    ]


def test_undescribed_meter_and_escaping() -> None:
    lines = encode([Reading.of("a b", Quantity.ENERGY_IMPORT, 1.5, TS)], "my site", {})
    assert lines[0].text == r"unknown,meter=a\ b,site=my\ site,source=a\ b energy_import=1.5 1795291200123"


def lines_of(n: int, start: int = 0) -> list[Line]:
    return [Line(f"m,meter=x v={i} {i}", 2) for i in range(start, start + n)]


def test_spool_fifo_survives_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", max_bytes=10_000_000)
    spool.append(lines_of(10), chunk_lines=4)
    spool.append(lines_of(5, 10))
    assert (spool.rows, spool.lines, spool.readings) == (4, 15, 30)
    spool.close()
    spool = Spool(tmp_path / "s.sqlite", max_bytes=10_000_000)
    assert spool.lines == 15
    head = spool.head(8)
    assert head is not None
    assert head.payload.decode().splitlines() == [line.text for line in lines_of(8)]
    spool.delete(head.row_ids)
    head = spool.head(100)
    assert head is not None
    assert head.payload.decode().splitlines() == [line.text for line in lines_of(7, 8)]
    spool.delete(head.row_ids)
    assert spool.head(100) is None
    assert (spool.rows, spool.bytes, spool.lines) == (0, 0, 0)


def test_spool_full_drops_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", max_bytes=64 * 1024)
    for batch in range(200):
        # incompressible-ish payload so the limit is reached
        spool.append([Line(f"m v={batch * 1000 + i}.{hash((batch, i))} {batch}", 1) for i in range(100)])
    assert spool.bytes <= 64 * 1024
    assert spool.dropped_readings > 0
    assert spool.dropped_readings + spool.readings == 200 * 100
    head = spool.head(1_000_000)
    assert head is not None
    texts = head.payload.decode().splitlines()
    assert texts[-1].endswith(" 199")  # the newest is kept
    assert not texts[0].endswith(" 0")  # the oldest is gone


def test_quarantine_keeps_reason_and_payload(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", max_bytes=1_000_000)
    ids = spool.append(lines_of(3))
    spool.append(lines_of(2, 3))
    spool.quarantine(ids, "HTTP 400: unable to parse")
    assert spool.lines == 2
    [entry] = spool.quarantined()
    assert entry.reason == "HTTP 400: unable to parse"
    assert entry.payload.decode().splitlines() == [line.text for line in lines_of(3)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10), st.integers(1, 40))
def test_spool_order_any_chunking(tmp_path_factory: pytest.TempPathFactory, sizes: list[int], batch: int) -> None:
    spool = Spool(tmp_path_factory.mktemp("s") / "s.sqlite", max_bytes=10_000_000)
    expected: list[str] = []
    start = 0
    for size in sizes:
        spool.append(lines_of(size, start), chunk_lines=7)
        expected += [line.text for line in lines_of(size, start)]
        start += size
    got: list[str] = []
    while (head := spool.head(batch)) is not None:
        got += head.payload.decode().splitlines()
        spool.delete(head.row_ids)
    assert got == expected


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (500, "retry"),
        (503, "retry"),
        (429, "retry"),
        (401, "blocked"),
        (404, "blocked"),
        (400, "quarantine"),
        (413, "quarantine"),
        (422, "quarantine"),
    ],
)
def test_classify_by_status(status: int, action: str) -> None:
    assert classify(WriteRejectedError(status, "Status", '{"code":"x"}')).action == action


def test_classify_retry_after_and_connection_errors() -> None:
    verdict = classify(WriteRejectedError(429, "Too Many Requests", "", retry_after_seconds("7")))
    assert verdict.retry_after_s == 7.0
    assert verdict.reason == "HTTP 429 Too Many Requests:"
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert classify(ConnectionRefusedError()).action == "retry"
    assert classify(TimeoutError()).action == "retry"


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=300)
@given(
    measurement=_TEXT.filter(lambda m: not m.startswith("#")),
    meter=_TEXT,
    site=_TEXT,
    phase=st.none() | _TEXT,
    values=st.dictionaries(
        st.sampled_from(list(Quantity)),
        st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**12), 10**12).map(float),
        min_size=1,
    ),
    ms=st.integers(0, 4_102_444_800_000),
)
def test_line_protocol_is_the_same_as_influxdb_clients_point(
    measurement: str, meter: str, site: str, phase: str | None, values: dict[Quantity, float], ms: int
) -> None:
    ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    tags = SeriesTags(measurement, site, meter, meter, phase)
    point = Point(measurement).tag("site", site).tag("meter", meter).tag("source", meter)
    if phase:
        point = point.tag("phase", phase)
    for quantity, value in values.items():
        point = point.field(quantity.value, value)
    # The integer timestamp, not `ts`: Point turns a datetime into ms through float seconds and
    # truncates (650432296.481 s -> ...480 ms); ours is exact, so a datetime oracle fails by 1 ms.
    expected = point.time(ms, "ms").to_line_protocol()
    assert (line(tags, values, ts) or "") == expected
