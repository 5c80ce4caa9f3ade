"""A five-year 15-minute ESPI file (~175,000 readings) parses in bounded memory.

Time is reported by tests/bench/green_button_parse.py, never asserted here.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from helpers.espi import MeterReadingSpec, atom_feed_chunks, intervals
from meterbridge.sources.green_button.espi import EspiParser

START = 1577836800  # 2020-01-01 00:00 UTC
DAYS = 5 * 365
PER_DAY = 96


def write_five_years(path: Path) -> int:
    """Write the file one daily block at a time; the number of readings."""
    spec = MeterReadingSpec("01", interval_length=900)
    spec.blocks = [intervals(START + day * 86400, PER_DAY, 900) for day in range(DAYS)]
    with path.open("w") as out:
        for piece in atom_feed_chunks([spec]):
            out.write(piece)
    return DAYS * PER_DAY


@pytest.mark.slow
def test_five_years_of_15_minute_data_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "five_years.xml"
    count = write_five_years(path)
    parser = EspiParser()
    seen = 0
    tracemalloc.start()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(256 * 1024):
                seen += len(parser.feed(chunk))
        seen += len(parser.close())
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count == 175_200
    assert parser.report.duplicates == 0
    assert parser.report.gaps == 0
    # the parser keeps ~40 days of interval starts for duplicate detection, nothing more
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
