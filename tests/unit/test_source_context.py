"""SourceContext: availability is de-duplicated against what was sent."""

from __future__ import annotations

from meterbridge.model import Event, MeterAvailability, MeterDescription
from meterbridge.sources import SourceContext
from meterbridge.stats import SourceStats


def test_a_first_offline_after_describe_is_sent() -> None:
    events: list[Event] = []
    ctx = SourceContext("s", SourceStats("x", 60.0), events.append)
    ctx.describe(MeterDescription("m", "M", "x"))
    ctx.availability("m", False)
    ctx.availability("m", False)
    ctx.availability("m", True)
    sent = [(e.meter_id, e.available) for e in events if isinstance(e, MeterAvailability)]
    assert sent == [("m", False), ("m", True)]
    assert ctx.stats.meters == {"m": True}
