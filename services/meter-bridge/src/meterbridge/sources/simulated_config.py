"""The `simulated` source's settings, apart from the source so that the schema does not load it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..configbase import SourceConfigBase

Profile = Literal["grid", "solar", "heat_pump", "ev"]


class SimulatedSourceConfig(SourceConfigBase):
    """`type: simulated`: one meter of a simulated household."""

    type: Literal["simulated"] = Field(description="Source family.")
    profile: Profile = Field(default="grid", description="What the meter measures: grid, solar, heat_pump or ev.")
    interval_s: float = Field(default=5.0, gt=0, le=3600, description="Seconds between readings (simulated time).")
    speed: float = Field(
        default=1.0, gt=0, le=100_000, description="Simulated seconds per real second (compress time in tests)."
    )
    seed: int = Field(
        default=0,
        description="The household: meters with the same seed measure parts of one home (grid = loads - solar).",
    )
    pv_peak_w: float = Field(default=0.0, ge=0, description="`grid` profile: peak output of a solar array behind it.")
    heat_pump_w: float = Field(
        default=0.0, ge=0, description="`grid` profile: rated power of a heat pump behind it (0: none)."
    )
    ev_w: float = Field(
        default=0.0, ge=0, description="`grid` profile: rated power of an EV charger behind it (0: none)."
    )
    rated_w: float = Field(default=0.0, ge=0, description="`heat_pump`/`ev`/`solar`: rated power (0: a typical value).")
    start_import_kwh: float = Field(default=0.0, ge=0, description="Import total to start from.")
    start_export_kwh: float = Field(default=0.0, ge=0, description="Export total to start from.")
