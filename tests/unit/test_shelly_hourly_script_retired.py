"""Why the Shelly hourly script could go (README, "No hourly script"): the counters it took the
hour's differences of are the very numbers the bridge already publishes as energy totals.

`script_counters` is the retired script's `totals()` (sources/shelly/provision.py before
issue 20) in Python: `emdata:0` `total_act`/`total_act_ret`, else `em1data:0`
`total_act_energy`/`total_act_ret_energy`, else `switch:0` or `pm1:0` `aenergy.total` and
`ret_aenergy.total` (0 without), all Wh. For every documented device shape in
tests/fixtures/shelly/, both counters appear among the parser's `energy_import` /
`energy_export` readings of the same status, in kWh: an hour's import/export is their
difference, which HA's statistics of those sensors and InfluxDB's `meters_1h` already hold.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from meterbridge.model import Quantity
from meterbridge.sources.shelly.parser import MeterNaming, ShellyDeviceParser, decode_frame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shelly"
TS = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


def script_counters(status: dict[str, Any]) -> tuple[float, float] | None:
    """(import Wh, export Wh) as the retired script read them from a full status."""
    if "emdata:0" in status:
        return status["emdata:0"]["total_act"], status["emdata:0"]["total_act_ret"]
    if "em1data:0" in status:
        return status["em1data:0"]["total_act_energy"], status["em1data:0"]["total_act_ret_energy"]
    channel = status.get("switch:0") or status.get("pm1:0")
    if channel is not None:
        returned = channel.get("ret_aenergy")
        return channel["aenergy"]["total"], returned["total"] if returned else 0
    return None


@pytest.mark.parametrize("name", ["plus1pm_full", "pmminig3", "pro3em", "proem"])
def test_the_script_counters_are_published_energy_totals(name: str) -> None:
    spec = json.loads((FIXTURES / f"{name}.json").read_text())
    frame = decode_frame(json.dumps(spec["frames"][0]).encode())
    assert frame.kind == "full"
    counters = script_counters(frame.params)
    assert counters is not None
    readings, _ = ShellyDeviceParser(MeterNaming(spec["device"], spec["device"])).full(frame.params, TS)
    imports = {round(r.value, 9) for r in readings if r.quantity is Quantity.ENERGY_IMPORT}
    exports = {round(r.value, 9) for r in readings if r.quantity is Quantity.ENERGY_EXPORT}
    assert round(counters[0] / 1000, 9) in imports
    assert round(counters[1] / 1000, 9) in exports | ({0.0} if counters[1] == 0 else set())
