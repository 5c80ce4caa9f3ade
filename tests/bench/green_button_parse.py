"""Benchmark: parse and hour-sum a five-year 15-minute ESPI file; prints time and memory."""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from test_green_button_large import write_five_years

from meterbridge.sources.green_button.espi import EspiParser
from meterbridge.sources.green_button.importer import parse_file


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "five_years.xml"
        count = write_five_years(path)
        size_mb = path.stat().st_size / 1e6
        began = time.perf_counter()
        parser = EspiParser()
        with path.open("rb") as stream:
            while chunk := stream.read(256 * 1024):
                parser.feed(chunk)
        parser.close()
        parse_s = time.perf_counter() - began
        began = time.perf_counter()
        summary = parse_file(path)
        import_s = time.perf_counter() - began
        tracemalloc.start()
        parser = EspiParser()
        with path.open("rb") as stream:
            while chunk := stream.read(256 * 1024):
                parser.feed(chunk)
        parser.close()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"green_button: {count} readings, {size_mb:.1f} MB file")
    print(f"  parse only:            {parse_s:.2f} s ({count / parse_s:,.0f} readings/s)")
    print(f"  parse + hour sums:     {import_s:.2f} s, {sum(len(h.kwh) for h in summary.hours.values())} hours")
    print(f"  parser peak (traced):  {peak / 1e6:.1f} MB")
    print(f"  process max RSS:       {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
