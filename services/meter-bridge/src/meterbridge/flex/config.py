"""The `flex` section of the configuration."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from ..configbase import StrictModel
from .assets import AssetConfig


class OpenAdrConfig(StrictModel):
    """The OpenADR 2.0b VEN (openleadr). Signing needs `cert`, `key`, `ca_file` and `vtn_fingerprint`."""

    enabled: bool = Field(default=False, description="Run the VEN.")
    vtn_url: str = Field(default="", description="The VTN's URL (`https://vtn.example/OpenADR2/Simple/2.0b`).")
    ven_name: str = Field(default="", description="This VEN's name (default: `hems-<site id>`).")
    ven_id: str | None = Field(default=None, description="The VEN id if the VTN assigned one out of band.")
    cert: Path | None = Field(default=None, description="PEM certificate used for TLS and message signing.")
    key: Path | None = Field(default=None, description="PEM private key of `cert`.")
    ca_file: Path | None = Field(default=None, description="CA bundle the VTN's certificate is checked against.")
    vtn_fingerprint: str | None = Field(default=None, description="Fingerprint of the VTN's signing certificate.")
    report_interval_s: float = Field(default=10.0, gt=0, description="Sampling interval of the telemetry reports.")

    @model_validator(mode="after")
    def _check(self) -> OpenAdrConfig:
        if self.enabled and not self.vtn_url:
            raise ValueError("vtn_url is required when the VEN is enabled")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        if self.cert is not None and self.ca_file is None:
            raise ValueError("a VEN with a certificate needs ca_file (openleadr requires it even over http)")
        return self


class SettlementConfig(StrictModel):
    """Settlement of events against baselines from the home's own history (docs/flex-settlement.md)."""

    ledger_path: Path | None = Field(
        default=None,
        description="Half-hour ledger, a line per meter and period (default: `flex-ledger.jsonl` by `state_path`).",
    )
    keep_days: int = Field(default=70, ge=7, le=400, description="Days of ledger kept (older lines dropped at start).")
    report_dir: Path | None = Field(
        default=None,
        description="Where `meter-bridge flex report` writes (default: `flex-reports` beside `state_path`).",
    )
    timezone: str = Field(
        default="UTC", description="IANA zone of the household's days and wall-clock periods (e.g. `Europe/London`)."
    )
    period_min: Literal[5, 10, 15, 30, 60] = Field(default=30, description="Settlement period in minutes.")
    days: int = Field(default=10, ge=1, le=60, description="`previous_days`: working days averaged.")
    weekend_days: int = Field(default=4, ge=1, le=30, description="`previous_days`: weekend days averaged.")
    high_x: int = Field(default=10, ge=1, le=60, description="`high_x_of_y`: the X highest days averaged.")
    high_y: int = Field(default=10, ge=1, le=60, description="`high_x_of_y`: out of the last Y days of the same kind.")
    adjustment_periods: int = Field(
        default=6, ge=0, le=48, description="`high_x_of_y`: in-day adjustment window, periods before the event."
    )
    adjustment_cap: float | None = Field(
        default=0.2, ge=0, description="Cap of the in-day adjustment, share of the baseline (null: uncapped)."
    )
    lookback_days: int = Field(default=60, ge=7, le=366, description="How far back baseline days are searched.")
    report_method: Literal["previous_days", "high_x_of_y", "snapshot"] = Field(
        default="previous_days", description="The method Home Assistant and the VTN are given (all go to InfluxDB)."
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    @model_validator(mode="after")
    def _x_of_y(self) -> SettlementConfig:
        if self.high_x > self.high_y:
            raise ValueError("high_x must not exceed high_y")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The household's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def period(self) -> timedelta:
        """The settlement period."""
        return timedelta(minutes=self.period_min)


class FlexConfig(StrictModel):
    """Demand response: events in, load control out, controls in Home Assistant."""

    enabled: bool = Field(default=False, description="Run demand response.")
    site_meter_id: str | None = Field(default=None, description="The meter measuring the whole site's import (W).")
    assets: list[AssetConfig] = Field(default_factory=list, description="Controllable loads.")
    event_topic: str = Field(
        default="", description="Community events (JSON, see docs/flex-event.schema.json); default `<base>/flex/event`."
    )
    manual_topic: str = Field(
        default="", description="Manual events from Home Assistant (same schema); default `<base>/flex/manual_event`."
    )
    state_path: Path = Field(default=Path("/data/flex-state.json"), description="Persisted state (resume on restart).")
    log_path: Path = Field(default=Path("/data/flex-events.jsonl"), description="Decision log, JSON lines.")
    failsafe_s: float = Field(
        default=300.0, ge=10, description="Device-side fail-safe (`toggle_after`) armed with every switch, re-armed."
    )
    stagger_s: float = Field(default=30.0, ge=0, description="Time between two assets restored after an event.")
    settle_s: float = Field(
        default=10.0, ge=0, description="How long a switched asset counts before the meter sees it."
    )
    tick_s: float = Field(default=1.0, gt=0, le=10, description="How often the policy runs.")
    import_limit_w: float | None = Field(default=None, gt=0, description="Initial import limit (HA can change it).")
    openadr: OpenAdrConfig = Field(default_factory=OpenAdrConfig, description="The OpenADR VEN.")
    settlement: SettlementConfig = Field(
        default_factory=SettlementConfig, description="Baselines and delivered energy per event."
    )

    @property
    def ledger_path(self) -> Path:
        """The half-hour ledger file."""
        return self.settlement.ledger_path or self.state_path.with_name("flex-ledger.jsonl")

    @property
    def report_dir(self) -> Path:
        """Where per-event settlement files go."""
        return self.settlement.report_dir or self.state_path.with_name("flex-reports")

    @model_validator(mode="after")
    def _unique(self) -> FlexConfig:
        ids = [asset.id for asset in self.assets]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate asset ids: {', '.join(duplicates)}")
        return self
