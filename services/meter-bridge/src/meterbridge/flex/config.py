"""The `flex` section of the configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

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

    @model_validator(mode="after")
    def _unique(self) -> FlexConfig:
        ids = [asset.id for asset in self.assets]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate asset ids: {', '.join(duplicates)}")
        return self
