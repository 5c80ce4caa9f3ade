"""Polling a utility's web account (opower, Duke Energy) into HA statistics and the sinks.

A family supplies a `UsageClient` (login, accounts, interval usage) built on its library;
`UtilityPollSource` owns the schedule and the failure policy:

- **ok**: every matching account's usage of the last `days_back` days is summed into UTC
  hours and merged into HA's external statistics `hems:<meter>_energy_import` /
  `_energy_export` (running `sum` continued, unchanged hours not re-sent, so a re-poll
  changes nothing); the hourly totals go to the sinks (InfluxDB). Meter id per account:
  `<source id>_<account>`.
- **auth_failed** (`AuthError`: the utility refused the credentials): not retried for
  `auth_retry_h` (default a day; 0: never, until the bridge restarts with a new config).
  Utilities lock an account after a few failed logins, so retrying a refused password on
  the outage schedule would lock the householder out of their own account; the password
  only changes with the config (balena restarts the service on a variable change).
- **mfa_required** (`MfaRequiredError`): the portal wants an interactive code. Same slow
  policy; the status names the fix (a TOTP secret where the utility accepts one).
- **outage** (`SourceConnectionError`, timeouts) and **statistics_failed** (HA refused or
  unreachable): jittered exponential backoff from `retry_initial_s` up to `interval_h`.

The status is shown in Home Assistant as a `binary_sensor` (`device_class: problem`, on
unless `ok`) and a text `sensor` (the status, with the detail as an attribute), on the
device of the source: described here, announced (and their retained state published) by the HA
sink, so a utility source opens no MQTT connection of its own. Nothing here raises out of `run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from ..backoff import Backoff
from ..errors import AuthError, BridgeError, SinkError
from ..ha_entities import Device, EntityCatalog, EntityDescription
from ..model import MeterDescription
from ..sections import MqttContext
from ..statistics import HaStatisticsClient
from . import Source, SourceContext
from .green_button.espi import Direction, EspiReport
from .green_button.importer import ImportSummary, import_summary
from .utility_config import UtilityPollConfigBase

_LOGGER = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_STARTING = "starting"
STATUS_AUTH = "auth_failed"
STATUS_MFA = "mfa_required"
STATUS_OUTAGE = "outage"
STATUS_STATISTICS = "statistics_failed"


class MfaRequiredError(AuthError):
    """The utility asks for an interactive multi-factor code the bridge cannot give."""


@dataclass(frozen=True, slots=True)
class UtilityAccount:
    """One account (service agreement / meter) at the utility: `key` as the utility names it."""

    key: str
    label: str


@dataclass(frozen=True, slots=True)
class UsageInterval:
    """Energy over [start, start + duration_s): kWh taken from the grid and fed into it (both >= 0)."""

    start: datetime
    duration_s: int
    import_kwh: float
    export_kwh: float = 0.0


class UsageClient(Protocol):
    """What a family's library adapter offers. Raises `AuthError`, `MfaRequiredError`, `SourceConnectionError`."""

    async def login(self) -> None:
        """Sign in (again)."""

    async def accounts(self) -> list[UtilityAccount]:
        """The electricity accounts the credentials see."""

    async def usage(self, account: UtilityAccount, start: datetime, end: datetime) -> list[UsageInterval]:
        """Interval usage of `account` between `start` and `end` (UTC)."""


def account_slug(key: str) -> str:
    """An account key as part of a meter id (lower case, `[a-z0-9_]`)."""
    return re.sub(r"[^a-z0-9_]+", "_", key.lower()).strip("_") or "account"


@dataclass(slots=True)
class UtilityStatus:
    """The status shown in Home Assistant."""

    status: str = STATUS_STARTING
    detail: str = ""
    last_success: str | None = None

    @property
    def problem(self) -> bool:
        """On for every status but ok/starting."""
        return self.status not in (STATUS_OK, STATUS_STARTING)


class StatusPublisher:
    """One source's status entities (problem binary_sensor + status sensor) and their retained state.

    It has no MQTT connection of its own: the state goes into the bridge's entity catalog, which
    the HA sink publishes on its connection (one session for all such states, issue 19).
    """

    def __init__(self, bridge: MqttContext, source_id: str, name: str, status: UtilityStatus) -> None:
        self._base = bridge.mqtt.base_topic
        self._source_id = source_id
        self._name = name
        self._status = status
        self._catalog: EntityCatalog | None = None

    @property
    def state_topic(self) -> str:
        """Retained JSON `{"status": .., "problem": .., "detail": .., "last_success": ..}`."""
        return f"{self._base}/utility/{self._source_id}/status"

    def entities(self) -> list[EntityDescription]:
        """The two entities, on the source's HA device (the HA sink announces them)."""
        device = Device(self._source_id, self._name, manufacturer="Utility")
        return [
            EntityDescription(
                "binary_sensor",
                f"{self._source_id}_problem",
                "Utility account problem",
                device,
                state_topic=self.state_topic,
                value_template="{{ 'ON' if value_json.problem else 'OFF' }}",
                device_class="problem",
                entity_category="diagnostic",
            ),
            EntityDescription(
                "sensor",
                f"{self._source_id}_status",
                "Utility account status",
                device,
                state_topic=self.state_topic,
                value_template="{{ value_json.status }}",
                icon="mdi:transmission-tower",
                entity_category="diagnostic",
                extra=(("json_attributes_topic", self.state_topic),),
            ),
        ]

    def attach(self, catalog: EntityCatalog) -> None:
        """Publish through `catalog` from now on (the current status at once)."""
        self._catalog = catalog
        self.changed()

    def changed(self) -> None:
        """Publish the status again."""
        if self._catalog is not None:
            self._catalog.set_state(self.state_topic, self._payload())

    def _payload(self) -> bytes:
        s = self._status
        body = {"status": s.status, "problem": s.problem, "detail": s.detail, "last_success": s.last_success}
        return json.dumps(body).encode()


ConfigT = TypeVar("ConfigT", bound=UtilityPollConfigBase)


class UtilityPollSource(Source[ConfigT]):
    """Polls a `UsageClient` on a schedule (policy in the module docstring)."""

    manufacturer = "Utility"
    historical = True  # hourly totals stamped by the utility

    def __init__(self, config: ConfigT, bridge: MqttContext | None = None) -> None:
        super().__init__(config)
        #: What Home Assistant is shown (published when the bridge config is given).
        self.state = UtilityStatus()
        self.status = (
            StatusPublisher(bridge, config.id, config.display_name, self.state) if bridge is not None else None
        )
        self.polls = 0
        self.logins = 0
        #: Statistics rows the last successful poll wrote (0: nothing changed in HA).
        self.last_written: int | None = None

    def make_client(self) -> contextlib.AbstractAsyncContextManager[UsageClient]:
        """The family's client (an async context manager owning its HTTP session)."""
        raise NotImplementedError

    def _set(self, status: str, detail: str = "") -> None:
        if status == STATUS_OK:
            self.state.last_success = datetime.now(UTC).isoformat(timespec="seconds")
        self.state.status, self.state.detail = status, detail[:250]
        if self.status is not None:
            self.status.changed()

    def wanted(self, accounts: Sequence[UtilityAccount]) -> list[UtilityAccount]:
        """The accounts the config asks for (all when `accounts` is empty)."""
        if not self.config.accounts:
            return list(accounts)
        return [a for a in accounts if a.key in self.config.accounts]

    async def poll_once(self, ctx: SourceContext, client: UsageClient) -> int:
        """One poll of every wanted account; the statistics rows written. Raises `BridgeError`s."""
        self.polls += 1
        end = datetime.now(UTC)
        start = end - timedelta(days=self.config.days_back)
        written = 0
        token = self.config.ha_token.get_secret_value() if self.config.ha_token is not None else None
        for account in self.wanted(await client.accounts()):
            meter_id = f"{self.id}_{account_slug(account.key)}"
            name = f"{self.config.display_name} {account.label}"
            ctx.describe(MeterDescription(meter_id, name, self.source_type, manufacturer=self.manufacturer))
            summary = summarise(await client.usage(account, start, end))
            if token is not None:
                async with HaStatisticsClient(self.config.ha_url, token) as stats:
                    result = await import_summary(summary, meter_id, name, stats)
            else:
                result = await import_summary(summary, meter_id, name, None)
            written += sum(result.rows_written.values())
            ctx.readings(result.readings)
            ctx.availability(meter_id, True)
        return written

    async def run(self, ctx: SourceContext) -> None:
        """Poll now, then every `interval_h`; never raises (see the module docstring)."""
        ctx.describe(MeterDescription(self.id, self.config.display_name, self.source_type, manufacturer="Utility"))
        if self.status is not None:
            ctx.announce(self.status.entities())
            self.status.attach(ctx.catalog)
        backoff = Backoff(initial=self.config.retry_initial_s, maximum=self.config.interval_h * 3600)
        auth_retry_s = self.config.auth_retry_h * 3600 or None
        async with self.make_client() as client:
            logged_in = False
            while True:
                delay: float | None = self.config.interval_h * 3600
                try:
                    if not logged_in:
                        self.logins += 1
                        await client.login()
                        logged_in = True
                    self.last_written = await self.poll_once(ctx, client)
                except MfaRequiredError as err:
                    logged_in = False
                    ctx.error("mfa", "%s %s: %s", self.source_type, self.id, err, level=logging.ERROR)
                    self._set(STATUS_MFA, str(err))
                    delay = auth_retry_s
                except AuthError as err:
                    logged_in = False
                    ctx.error("auth", "%s %s: %s", self.source_type, self.id, err, level=logging.ERROR)
                    self._set(STATUS_AUTH, str(err))
                    delay = auth_retry_s
                except SinkError as err:  # HA statistics: the utility side worked
                    ctx.error("statistics", "%s %s: %s", self.source_type, self.id, err)
                    self._set(STATUS_STATISTICS, str(err))
                    delay = backoff.next_delay()
                except (BridgeError, OSError, TimeoutError) as err:
                    logged_in = False  # a session cut by an outage may need a fresh login
                    ctx.error("outage", "%s %s: %s", self.source_type, self.id, err)
                    self._set(STATUS_OUTAGE, str(err))
                    delay = backoff.next_delay()
                else:
                    backoff.reset()
                    self._set(STATUS_OK)
                if delay is None:
                    await asyncio.Event().wait()  # until the bridge restarts with a new config
                await asyncio.sleep(delay or 0.0)


def summarise(intervals: Sequence[UsageInterval]) -> ImportSummary:
    """Interval usage summed into UTC hours per direction (an `ImportSummary` without ESPI report)."""
    summary = ImportSummary(EspiReport())
    for interval in intervals:
        ts = int(interval.start.timestamp())
        summary.hours[Direction.DELIVERED].add(ts, interval.duration_s, interval.import_kwh)
        if interval.export_kwh:
            summary.hours[Direction.RECEIVED].add(ts, interval.duration_s, interval.export_kwh)
    return summary
