"""The `opower` source: usage from utilities on Opower's platform (PG&E, ConEd, Exelon, ...).

Built on PyPI `opower` (the library of Home Assistant's Opower integration): it signs in to
the utility's own login and then reads Opower's API. Electricity accounts only (gas comes
in therms/CCF). Hourly reads where the account has them, else daily reads (spread evenly
over the day's hours by the statistics code). Net-metered accounts: the library's separate
`imported`/`exported` registers when the utility publishes them, else the sign of
`consumption` (negative = fed into the grid). Library exceptions are mapped to ours here:
`InvalidAuth` -> `AuthError`, `MfaChallenge` -> `MfaRequiredError`, `CannotConnect`,
`ApiException`, aiohttp errors -> `SourceConnectionError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import aiohttp

from ..errors import AuthError, SourceConnectionError
from .opower_config import OpowerSourceConfig
from .utilitypoll import MfaRequiredError, UsageInterval, UtilityAccount, UtilityPollSource

FINE_RESOLUTIONS = frozenset({"HOUR", "HALF_HOUR", "QUARTER_HOUR", "FIVE_MINUTE"})


OpowerFactory = Callable[..., Any]


class OpowerUsageClient:
    """`UsageClient` over `opower.Opower` (exceptions mapped in one place)."""

    def __init__(self, config: OpowerSourceConfig, session: aiohttp.ClientSession, factory: OpowerFactory) -> None:
        self._config = config
        totp = config.totp_secret.get_secret_value() if config.totp_secret is not None else None
        self._api = factory(
            session,
            config.utility,
            config.username.get_secret_value(),
            config.password.get_secret_value(),
            totp,
        )
        self._accounts: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def _mapped(self, what: str) -> AsyncIterator[None]:
        import opower

        try:
            yield
        except opower.MfaChallenge as err:
            hint = (
                "set totp_secret"
                if self._api.utility.accepts_totp_secret()
                else "this utility's MFA needs a person; turn MFA off for this login"
            )
            raise MfaRequiredError(f"{self._config.utility}: MFA required ({hint})") from err
        except opower.InvalidAuth as err:
            raise AuthError(f"{self._config.utility}: login refused: {err}") from err
        except (opower.CannotConnect, opower.exceptions.ApiException, aiohttp.ClientError, ValueError, KeyError) as err:
            raise SourceConnectionError(f"{self._config.utility}: {what} failed: {err}") from err

    async def login(self) -> None:
        """Sign in at the utility (and authorise Opower)."""
        async with self._mapped("login"):
            await self._api.async_login()

    async def accounts(self) -> list[UtilityAccount]:
        """Electricity accounts, keyed by the utility's account number."""
        import opower

        async with self._mapped("accounts"):
            found = await self._api.async_get_accounts()
        self._accounts = {a.utility_account_id: a for a in found if a.meter_type == opower.MeterType.ELEC}
        return [UtilityAccount(key, f"account {key}") for key in self._accounts]

    async def usage(self, account: UtilityAccount, start: datetime, end: datetime) -> list[UsageInterval]:
        """Hourly (else daily) usage reads of `account`, kWh."""
        import opower

        raw = self._accounts[account.key]
        resolution = str(raw.read_resolution) if raw.read_resolution is not None else "DAY"
        aggregate = opower.AggregateType.HOUR if resolution in FINE_RESOLUTIONS else opower.AggregateType.DAY
        async with self._mapped("usage"):
            reads = await self._api.async_get_usage_reads(raw, aggregate, start, end)
        intervals = []
        for read in reads:
            net = float(read.consumption)
            imported = float(read.imported) if read.imported is not None else max(net, 0.0)
            exported = float(read.exported) if read.exported is not None else max(-net, 0.0)
            duration = int((read.end_time - read.start_time).total_seconds())
            if duration > 0:
                intervals.append(UsageInterval(read.start_time, duration, imported, exported))
        return intervals


def _opower_factory() -> OpowerFactory:
    import opower

    return opower.Opower


class OpowerSource(UtilityPollSource[OpowerSourceConfig]):
    """Polls an Opower utility account (see module docstring)."""

    source_type = "opower"

    def __init__(self, config: OpowerSourceConfig, bridge: Any = None, factory: OpowerFactory | None = None) -> None:
        super().__init__(config, bridge)
        self._factory = factory

    @contextlib.asynccontextmanager
    async def make_client(self) -> AsyncIterator[OpowerUsageClient]:
        """An `OpowerUsageClient` with its own cookie-keeping session."""
        import opower

        async with aiohttp.ClientSession(cookie_jar=opower.create_cookie_jar()) as session:
            yield OpowerUsageClient(self.config, session, self._factory or _opower_factory())
