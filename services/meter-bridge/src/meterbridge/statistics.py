"""Hourly energy totals and their import into Home Assistant's long-term statistics.

`HourlyEnergy` sums interval energy (any interval length) into UTC hours. `HaStatisticsClient`
talks to HA's websocket API (`recorder/statistics_during_period`,
`recorder/import_statistics`) as an admin and merges: existing hours are kept, imported hours
replace the same hours, the running `sum` is recomputed from the first changed hour on and
continues from the last statistic already in HA; only rows that differ are sent, so importing
the same data twice changes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from .errors import AuthError, SinkError

HOUR_S = 3600
#: Rows per `recorder/import_statistics` call (keeps each websocket message small).
IMPORT_BATCH = 2000
#: Sums equal within this (kWh) count as unchanged (float round-trips through SQLite).
SUM_TOLERANCE_KWH = 1e-6


class HourlyEnergy:
    """Energy per UTC hour, kWh (non-negative). Intervals crossing an hour are split pro rata."""

    def __init__(self) -> None:
        self.kwh: dict[int, float] = {}  # hour start, epoch s -> kWh

    def add(self, start: int, duration_s: int, energy_kwh: float) -> None:
        """Add `energy_kwh` spread evenly over [start, start + duration_s)."""
        end = start + duration_s
        hour = start - start % HOUR_S
        while hour < end:
            overlap = min(end, hour + HOUR_S) - max(start, hour)
            self.kwh[hour] = self.kwh.get(hour, 0.0) + energy_kwh * overlap / duration_s
            hour += HOUR_S

    def total(self) -> float:
        """Total kWh."""
        return math.fsum(self.kwh.values())


@dataclass(frozen=True, slots=True)
class StatisticRow:
    """One hour of an external statistic: `state` is the hour's kWh, `sum` the running total."""

    start: int  # epoch s, on the hour
    state: float
    sum: float


def parse_version(version: str) -> tuple[int, int]:
    """`"2024.3.3"` -> (2024, 3); unknown formats count as very new."""
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return (9999, 0)


def statistic_metadata(statistic_id: str, name: str | None, ha_version: str) -> dict[str, Any]:
    """Metadata of a kWh sum statistic, in the keys the given HA version accepts.

    An external statistic (`domain:object`) has `source` = its domain; an entity's own
    statistic (`sensor.x`, the id the recorder compiles into) has `source` = `recorder`.
    HA 2024.3 rejects unknown keys and wants exactly has_mean, has_sum, name, source,
    statistic_id, unit_of_measurement; 2025.4 replaced has_mean by mean_type, and newer
    releases want unit_class (omitting it is deprecated).
    """
    domain, colon, _ = statistic_id.partition(":")
    source = domain if colon else "recorder"
    metadata: dict[str, Any] = {
        "has_sum": True,
        "name": name,
        "source": source,
        "statistic_id": statistic_id,
        "unit_of_measurement": "kWh",
    }
    version = parse_version(ha_version)
    if version >= (2025, 4):
        metadata["mean_type"] = 0  # StatisticMeanType.NONE
    else:
        metadata["has_mean"] = False
    if version >= (2025, 10):
        metadata["unit_class"] = "energy"
    return metadata


def merge_rows(existing: Iterable[StatisticRow], hours: Mapping[int, float]) -> list[StatisticRow]:
    """The rows to write so HA holds `existing` overlaid with `hours`, sums continuous.

    Rows before the first imported hour keep their sums; from there on every row's sum is
    the previous sum plus its state. Only rows that differ from `existing` are returned.
    """
    if not hours:
        return []
    old = {row.start: row for row in existing}
    first = min(hours)
    before = [row for start, row in old.items() if start < first]
    running = max(before, key=lambda row: row.start).sum if before else 0.0
    changed: list[StatisticRow] = []
    for start in sorted(set(hours) | {s for s in old if s >= first}):
        state = hours[start] if start in hours else old[start].state
        running += state
        row = StatisticRow(start, state, running)
        prior = old.get(start)
        if (
            prior is None
            or abs(prior.state - row.state) > SUM_TOLERANCE_KWH
            or abs(prior.sum - row.sum) > SUM_TOLERANCE_KWH
        ):
            changed.append(row)
    return changed


def _epoch(value: Any) -> int:
    # HA answers epoch milliseconds (2023.3+); older releases ISO strings.
    if isinstance(value, int | float):
        return int(value / 1000)
    return int(datetime.fromisoformat(str(value)).timestamp())


class HaStatisticsClient:
    """An authenticated websocket to Home Assistant for statistics (admin token needed).

    `async with HaStatisticsClient(url, token) as client:`; raises `AuthError` on a refused
    token and `SinkError` on connection or command failures (naming the URL).
    """

    def __init__(self, url: str, token: str, timeout_s: float = 60.0) -> None:
        base = url.rstrip("/")
        self.ws_url = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/api/websocket"
        self._token = token
        self._timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.ha_version = ""

    async def __aenter__(self) -> HaStatisticsClient:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.ws_url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_receive=self._timeout_s)
            )
            await self._ws.receive_json(timeout=self._timeout_s)  # auth_required
            await self._ws.send_json({"type": "auth", "access_token": self._token})
            answer = await self._ws.receive_json(timeout=self._timeout_s)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
            await self._session.close()
            raise SinkError(f"Home Assistant websocket {self.ws_url}: {err}") from err
        if answer.get("type") != "auth_ok":
            await self._session.close()
            raise AuthError(f"Home Assistant {self.ws_url} refused the token: {answer.get('message')}")
        self.ha_version = str(answer.get("ha_version", ""))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, command: str, **payload: Any) -> Any:
        """Run a websocket command; its result. Raises `SinkError` when HA answers an error."""
        if self._ws is None:
            raise SinkError("not connected")
        msg_id = next(self._ids)
        try:
            await self._ws.send_json({"id": msg_id, "type": command, **payload})
            async with asyncio.timeout(self._timeout_s):
                while True:
                    message = await self._ws.receive_json()
                    if message.get("id") == msg_id and message.get("type") == "result":
                        break
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, TypeError) as err:
            raise SinkError(f"Home Assistant {self.ws_url}: {command}: {err!r}") from err
        if not message.get("success"):
            raise SinkError(f"Home Assistant {self.ws_url}: {command} failed: {message.get('error')}")
        return message.get("result")

    async def existing_rows(self, statistic_id: str) -> list[StatisticRow]:
        """Every hourly row HA holds for `statistic_id`, oldest first."""
        result = await self.call(
            "recorder/statistics_during_period",
            start_time="2000-01-01T00:00:00+00:00",
            statistic_ids=[statistic_id],
            period="hour",
            types=["state", "sum"],
        )
        rows = result.get(statistic_id, []) if isinstance(result, dict) else []
        return [
            StatisticRow(_epoch(row["start"]), float(row.get("state") or 0.0), float(row.get("sum") or 0.0))
            for row in rows
        ]

    async def import_hours(self, statistic_id: str, name: str, hours: Mapping[int, float]) -> list[StatisticRow]:
        """Merge `hours` (hour start epoch s -> kWh) into `statistic_id`; the rows written (changed)."""
        rows = merge_rows(await self.existing_rows(statistic_id), hours)
        await self.import_rows(statistic_id, name, rows)
        return rows

    async def import_rows(self, statistic_id: str, name: str | None, rows: list[StatisticRow]) -> None:
        """Write `rows` (oldest first) as they are and wait until HA has stored the last one.

        For an entity's own statistic (`sensor.x`) pass `name=None`, as the recorder does.
        """
        metadata = statistic_metadata(statistic_id, name, self.ha_version)
        for index in range(0, len(rows), IMPORT_BATCH):
            batch = rows[index : index + IMPORT_BATCH]
            stats = [
                {"start": datetime.fromtimestamp(row.start, UTC).isoformat(), "state": row.state, "sum": row.sum}
                for row in batch
            ]
            await self.call("recorder/import_statistics", metadata=metadata, stats=stats)
        if rows:
            await self._wait_until_stored(statistic_id, rows[-1])

    async def _wait_until_stored(self, statistic_id: str, last: StatisticRow) -> None:
        # import_statistics only queues the rows for the recorder thread, which commits them
        # later (commit_interval): read back until the newest row is there, so a following
        # import (and the caller) sees what was written. SinkError when it never shows up.
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        while True:
            stored = {row.start: row for row in await self.existing_rows(statistic_id)}
            row = stored.get(last.start)
            if row is not None and abs(row.sum - last.sum) <= SUM_TOLERANCE_KWH:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise SinkError(f"Home Assistant {self.ws_url}: {statistic_id} not stored after {self._timeout_s} s")
            await asyncio.sleep(0.25)
