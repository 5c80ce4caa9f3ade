"""The `green_button` source's settings, apart from the source so that the schema does not load aiohttp."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from ...configbase import HaStatisticsSourceBase


class GreenButtonSourceConfig(HaStatisticsSourceBase):
    """Green Button (ESPI) data, from a file dropped on the device or PG&E Share My Data."""

    type: Literal["green_button"] = Field(description="Source family.")
    api: Literal["file", "pge"] = Field(default="file", description="`file`: read `path`; `pge`: Share My Data.")
    path: Path | None = Field(default=None, description="ESPI XML file (api `file`); re-imported when it changes.")
    interval_h: float = Field(default=24.0, gt=0, description="Hours between two imports (daily by default).")
    base_url: str = Field(default="https://api.pge.com", description="PG&E API host (scheme and host only: no path).")
    environment: Literal["production", "test"] = Field(
        default="production",
        description="`test`: PG&E's test OAuth endpoint (`/datacustodian/test/oauth/v2/token`), for the "
        "registration's connectivity test; ESPI resources are on the same host either way.",
    )
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
    cert_pem: SecretStr | None = Field(
        default=None, description="The client certificate as PEM text (`${PGE_CERT}`), instead of `cert_file`."
    )
    key_pem: SecretStr | None = Field(
        default=None, description="Its private key as PEM text (`${PGE_KEY}`), instead of `key_file`."
    )
    credentials_dir: Path = Field(
        default=Path("/data/pge"), description="Where `cert_pem`/`key_pem` are written at start (mode 0600 files)."
    )
    ca_file: Path | None = Field(default=None, description="CA bundle to verify PG&E (default: system CAs).")
    stale_after_s: float = Field(
        default=3 * 86400.0, gt=0, description="Unhealthy when the last imported hour is older than this."
    )

    @field_validator("base_url")
    @classmethod
    def _host_only(cls, value: str) -> str:
        # the token and resource paths are appended to it: a path here gave
        # `/datacustodian/test/datacustodian/...` (issue 20)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be a URL such as https://api.pge.com")
        if parts.path.strip("/") or parts.query:
            raise ValueError(
                "scheme and host only (https://api.pge.com); for PG&E's test endpoint set environment: test"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_certificate(self) -> GreenButtonSourceConfig:
        if (self.cert_pem is None) != (self.key_pem is None):
            raise ValueError("cert_pem and key_pem go together")
        if self.cert_pem is not None and (self.cert_file is not None or self.key_file is not None):
            raise ValueError("give the certificate either as cert_pem/key_pem or as cert_file/key_file, not both")
        return self
