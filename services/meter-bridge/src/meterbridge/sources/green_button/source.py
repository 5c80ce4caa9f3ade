"""The `green_button` source: a daily import from a file or from PG&E Share My Data.

Each run parses the ESPI data, merges its hours into HA's long-term statistics (when a token
is configured) and hands the hourly totals to the sinks (InfluxDB). Credentials refused or
outages are counted, logged rate-limited, the meter marked unavailable and retried with
backoff (auth problems at most daily): never a crash loop.
"""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import aiohttp
from pydantic import Field, SecretStr

from ...backoff import Backoff
from ...configbase import SourceConfigBase
from ...errors import AuthError, BridgeError, ConfigError, ParseError
from ...model import MeterDescription
from ...statistics import HaStatisticsClient
from .. import Source, SourceContext
from .importer import ImportSummary, import_summary, parse_stream
from .pge import ShareMyDataClient, client_ssl_context


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


class GreenButtonSource(Source[GreenButtonSourceConfig]):
    """Imports Green Button data on a schedule (see module docstring)."""

    source_type = "green_button"

    def __init__(self, config: GreenButtonSourceConfig) -> None:
        super().__init__(config)
        self._last_mtime: float | None = None
        self._pge: ShareMyDataClient | None = None

    def _pge_client(self) -> ShareMyDataClient:
        config = self.config
        if self._pge is None:
            if not (config.cert_file and config.key_file and config.client_id and config.client_secret):
                raise ConfigError([f"source {config.id}: api pge needs cert_file, key_file, client_id, client_secret"])
            context = client_ssl_context(config.cert_file, config.key_file, config.ca_file)
            self._pge = ShareMyDataClient(
                config.base_url, config.client_id.get_secret_value(), config.client_secret.get_secret_value(), context
            )
        return self._pge

    async def _download(self, session: aiohttp.ClientSession) -> bytes | None:
        config = self.config
        if config.api == "file":
            if config.path is None:
                raise ConfigError([f"source {config.id}: api file needs path"])
            mtime = (await asyncio.to_thread(config.path.stat)).st_mtime
            if mtime == self._last_mtime:
                return None  # unchanged since the last import
            self._last_mtime = mtime
            return await asyncio.to_thread(config.path.read_bytes)
        now = datetime.now(UTC).replace(microsecond=0)
        params = {
            "published-min": (now - timedelta(days=config.days_back)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "published-max": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        path = config.resource_path.format(subscription_id=config.subscription_id or "")
        return await self._pge_client().fetch(session, path, params)

    async def run_once(self, ctx: SourceContext, session: aiohttp.ClientSession) -> ImportSummary | None:
        """One import; None when there was nothing new. Raises BridgeError subclasses."""
        data = await self._download(session)
        if data is None:
            return None
        summary = await asyncio.to_thread(parse_stream, io.BytesIO(data))
        name = self.config.display_name
        if self.config.ha_token is not None:
            async with HaStatisticsClient(self.config.ha_url, self.config.ha_token.get_secret_value()) as client:
                result = await import_summary(summary, self.id, name, client)
        else:
            result = await import_summary(summary, self.id, name, None)
        ctx.readings(result.readings)
        return summary

    async def run(self, ctx: SourceContext) -> None:
        """Import now, then every `interval_h`; back off on failures."""
        ctx.describe(MeterDescription(self.id, self.config.display_name, self.source_type, manufacturer="Utility"))
        backoff = Backoff(initial=60.0, maximum=self.config.interval_h * 3600)
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self.run_once(ctx, session)
                except ConfigError as err:
                    ctx.error("config", "Green Button %s: %s", self.id, err)
                    ctx.availability(self.id, False)
                    await asyncio.sleep(self.config.interval_h * 3600)
                    continue
                except AuthError as err:
                    # never hammer an endpoint that refuses us: wait a full interval
                    ctx.error("auth", "Green Button %s: %s", self.id, err)
                    ctx.availability(self.id, False)
                    await asyncio.sleep(self.config.interval_h * 3600)
                    continue
                except (ParseError, BridgeError, OSError) as err:
                    ctx.error("import", "Green Button %s: import failed: %s", self.id, err)
                    ctx.availability(self.id, False)
                    await asyncio.sleep(backoff.next_delay())
                    continue
                backoff.reset()
                ctx.availability(self.id, True)
                await asyncio.sleep(self.config.interval_h * 3600)
