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

import aiohttp

from ...backoff import Backoff
from ...errors import AuthError, BridgeError, ConfigError, ParseError
from ...model import MeterDescription
from ...statistics import HaStatisticsClient
from .. import Source, SourceContext
from .config import GreenButtonSourceConfig
from .credentials import write_pem_files
from .importer import ImportSummary, import_summary, parse_stream
from .pge import TOKEN_PATHS, ShareMyDataClient, client_ssl_context


class GreenButtonSource(Source[GreenButtonSourceConfig]):
    """Imports Green Button data on a schedule (see module docstring)."""

    source_type = "green_button"
    historical = True  # hourly totals stamped by the utility

    def __init__(self, config: GreenButtonSourceConfig) -> None:
        super().__init__(config)
        self._last_mtime: float | None = None
        self._pge: ShareMyDataClient | None = None

    def _pge_client(self) -> ShareMyDataClient:
        config = self.config
        if self._pge is None:
            cert_file, key_file = config.cert_file, config.key_file
            if config.cert_pem is not None and config.key_pem is not None:
                cert_file, key_file = write_pem_files(
                    config.cert_pem.get_secret_value(),
                    config.key_pem.get_secret_value(),
                    config.credentials_dir,
                    config.id,
                    f"source {config.id}",
                )
            if not (cert_file and key_file and config.client_id and config.client_secret):
                raise ConfigError(
                    [
                        f"source {config.id}: api pge needs cert_file/key_file (or cert_pem/key_pem), "
                        "client_id, client_secret"
                    ]
                )
            context = client_ssl_context(cert_file, key_file, config.ca_file)
            self._pge = ShareMyDataClient(
                config.base_url,
                config.client_id.get_secret_value(),
                config.client_secret.get_secret_value(),
                context,
                token_path=TOKEN_PATHS[config.environment],
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
