"""The `duke_energy` source: hourly usage of Duke Energy meters with PyPI `aiodukeenergy`.

aiodukeenergy 1.x signs in through Duke's Auth0 tenant with a browser login only (PKCE
authorization code; Duke retired password logins for API clients), so the bridge cannot
take a username/password: it takes the **refresh token** of such a login (env
`${DUKE_REFRESH_TOKEN}`) and keeps the rotated one in `token_file` (mode 0600), the way
Home Assistant's integration keeps its OAuth token. `RefreshTokenAuth` is the library's
documented extension point (`AbstractDukeEnergyAuth`) for that. Library exceptions are
mapped here: `DukeEnergyAuthError` (refresh token refused or expired) -> `AuthError`;
aiohttp errors and 5xx -> `SourceConnectionError`; 401/403 -> `AuthError`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiodukeenergy import AbstractDukeEnergyAuth, Auth0Client, DukeEnergy, DukeEnergyAuthError

from ..errors import AuthError, SourceConnectionError
from .duke_energy_config import DukeEnergySourceConfig
from .duke_login import save_refresh_token
from .utilitypoll import UsageInterval, UtilityAccount, UtilityPollSource


class RefreshTokenAuth(AbstractDukeEnergyAuth):
    """Auth0 tokens from a refresh token; a rotated refresh token is saved to `token_file`."""

    def __init__(self, session: aiohttp.ClientSession, auth0: Any, refresh_token: str, token_file: Path) -> None:
        super().__init__(session)
        self._auth0 = auth0
        self._token_file = token_file
        self._refresh_token = self._saved_token() or refresh_token
        self._id_token: str | None = None
        self._expires_at = 0.0

    def _saved_token(self) -> str | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return str(json.loads(self._token_file.read_text())["refresh_token"])
        return None

    def _save(self) -> None:
        save_refresh_token(self._token_file, self._refresh_token)

    async def async_get_id_token(self) -> str:
        """A fresh Auth0 ID token. Raises `DukeEnergyAuthError` when the refresh token is refused."""
        now = datetime.now().timestamp()
        if self._id_token is None or now >= self._expires_at:
            result = await self._auth0.refresh_token(self._refresh_token)
            rotated = result.get("refresh_token")
            if rotated and rotated != self._refresh_token:
                self._refresh_token = rotated
                self._save()
            self._id_token = str(result["id_token"])
            self._expires_at = now + float(result.get("expires_in", 3600)) - 60
            self.invalidate_token()
        return self._id_token


ClientFactory = Callable[[aiohttp.ClientSession, DukeEnergySourceConfig], Any]


def default_client(session: aiohttp.ClientSession, config: DukeEnergySourceConfig) -> DukeEnergy:
    """The real library client for `config`."""
    auth = RefreshTokenAuth(session, Auth0Client(session), config.refresh_token.get_secret_value(), config.token_file)
    return DukeEnergy(auth)


class DukeUsageClient:
    """`UsageClient` over `aiodukeenergy.DukeEnergy` (exceptions mapped in one place)."""

    def __init__(self, config: DukeEnergySourceConfig, api: Any) -> None:
        self._config = config
        self._api = api
        self._tz = ZoneInfo(config.timezone)

    @contextlib.asynccontextmanager
    async def _mapped(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except DukeEnergyAuthError as err:
            raise AuthError(
                f"Duke Energy: {what}: sign-in refused ({err}); log in again for a new refresh token"
            ) from err
        except aiohttp.ClientResponseError as err:
            if err.status in (401, 403):
                raise AuthError(f"Duke Energy: {what}: HTTP {err.status}") from err
            raise SourceConnectionError(f"Duke Energy: {what}: HTTP {err.status}") from err
        except (aiohttp.ClientError, ValueError, KeyError, IndexError) as err:
            raise SourceConnectionError(f"Duke Energy: {what} failed: {err!r}") from err

    async def login(self) -> None:
        """Fetch the meter list (it signs in on the way)."""
        async with self._mapped("login"):
            await self._api.get_meters(fresh=True)

    async def accounts(self) -> list[UtilityAccount]:
        """Electric meters, keyed by serial number."""
        async with self._mapped("meters"):
            meters = await self._api.get_meters()
        return [
            UtilityAccount(str(serial), f"meter {serial}")
            for serial, meter in meters.items()
            if str(meter.get("serviceType", "ELECTRIC")).upper() == "ELECTRIC"
        ]

    async def usage(self, account: UtilityAccount, start: datetime, end: datetime) -> list[UsageInterval]:
        """Hourly usage (kWh) of the meter from local midnight of `start` to `end`."""
        first = start.astimezone(self._tz).replace(hour=0, minute=0, second=0, microsecond=0)
        last = end.astimezone(self._tz).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        async with self._mapped("usage"):
            result = await self._api.get_energy_usage(account.key, "HOURLY", "DAY", first, max(first, last))
        return [
            UsageInterval(ts, 3600, float(values["energy"]))
            for ts, values in sorted(result["data"].items())
            if values.get("energy") is not None
        ]


class DukeEnergySource(UtilityPollSource[DukeEnergySourceConfig]):
    """Polls Duke Energy meters (see module docstring)."""

    source_type = "duke_energy"
    manufacturer = "Duke Energy"

    def __init__(
        self, config: DukeEnergySourceConfig, bridge: Any = None, factory: ClientFactory | None = None
    ) -> None:
        super().__init__(config, bridge)
        self._factory = factory or default_client

    @contextlib.asynccontextmanager
    async def make_client(self) -> AsyncIterator[DukeUsageClient]:
        """A `DukeUsageClient` with its own HTTP session."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            yield DukeUsageClient(self.config, self._factory(session, self.config))
