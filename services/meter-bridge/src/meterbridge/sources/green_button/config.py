"""The `green_button` source's settings, apart from the source so that the schema does not load aiohttp."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from ...configbase import SourceConfigBase


class GreenButtonSourceConfig(SourceConfigBase):
    """Green Button (ESPI) data, from a file dropped on the device or PG&E Share My Data."""

    type: Literal["green_button"] = Field(description="Source family.")
    api: Literal["file", "pge"] = Field(default="file", description="`file`: read `path`; `pge`: Share My Data.")
    path: Path | None = Field(default=None, description="ESPI XML file (api `file`); re-imported when it changes.")
    interval_h: float = Field(default=24.0, gt=0, description="Hours between two imports (daily by default).")
    base_url: str = Field(default="https://api.pge.com", description="PG&E API base URL.")
    resource_path: str = Field(
        default="/GreenButtonConnect/espi/1_1/resource/Batch/Subscription/{subscription_id}",
        description="ESPI resource fetched each run (`{subscription_id}` is filled in).",
    )
    subscription_id: str | None = Field(default=None, description="Share My Data subscription id (api `pge`).")
    days_back: int = Field(default=7, ge=1, le=400, description="Days of data asked for on each run.")
    client_id: SecretStr | None = Field(default=None, description="OAuth client id (use `${PGE_CLIENT_ID}`).")
    client_secret: SecretStr | None = Field(
        default=None, description="OAuth client secret (use `${PGE_CLIENT_SECRET}`)."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM) registered with PG&E.")
    key_file: Path | None = Field(default=None, description="Its private key (PEM, mode 0600).")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify PG&E (default: system CAs).")
    ha_url: str = Field(default="http://homeassistant:8123", description="Home Assistant for long-term statistics.")
    ha_token: SecretStr | None = Field(
        default=None, description="HA long-lived admin token (use `${HA_TOKEN}`); none: no statistics import."
    )
    stale_after_s: float = Field(
        default=3 * 86400.0, gt=0, description="Unhealthy when the last imported hour is older than this."
    )
