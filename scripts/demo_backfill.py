"""Give the demo's Home Assistant a past: a week of the simulated household in long-term statistics.

Used by `make demo` (scripts/demo.sh) once Home Assistant is onboarded:

    python scripts/demo_backfill.py --url http://127.0.0.1:18123 --token-file .demo/ha_token \\
        --bridge-config .demo/bridge/config.yaml [--days 7]          # the week, in seconds
    python scripts/demo_backfill.py ... --join                       # then, in the background

For every energy entity of every `simulated` meter in the bridge's configuration, hourly rows
for the `days` before the hour of the entity's first recorded state are written with
`recorder/import_statistics` into the entity's own statistic (`sensor.hems_grid_energy_import`,
source `recorder`), computed from the same `Household` the live meters read
(meterbridge/sources/simulated.py), so the Energy dashboard has charts at once. Their sums
count from 0 at the start of the week, so every view's first bar is right.

Joining the live data (Home Assistant 2026.10, homeassistant/components/sensor/recorder.py
`compile_statistics`): the recorder continues a `total_increasing` sum only from the newest
*short-term* (5-minute) statistic, and the websocket imports only hourly rows, so the first
compile starts the sum at 0 again, with the entity's first recorded numeric state (at T0) as
its zero point: a drop of the whole week in the hour the live data starts. `--join` waits for
that first compile (up to about 5 minutes) and lifts every compiled row from the hour H holding
T0 on (`recorder/adjust_sum_statistics`, both tables) by the imported sum at H plus the model's
energy from H to T0. Later compiles continue from the lifted 5-minute row, so the sums never
jump. Already joined rows (or hours whose previous run compiled and joined) are left alone.

An entity that already has hourly rows before its first state's hour (a second `make demo` on
the same data) gets no new rows. Exit 0 when every entity is done or skipped, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meterbridge.config import load_config
from meterbridge.errors import BridgeError
from meterbridge.model import Quantity
from meterbridge.sources.simulated import HouseholdModel
from meterbridge.sources.simulated_config import SimulatedSourceConfig
from meterbridge.statistics import HOUR_S, SUM_TOLERANCE_KWH, HaStatisticsClient, StatisticRow

#: The model is integrated at this step (s) or the meter's interval if longer: a week of four
#: meters takes about a second, and an hour's energy differs from a 2 s integration by < 1 %.
STEP_S = 10.0


@dataclass(frozen=True, slots=True)
class EnergyEntity:
    """One energy entity of a simulated meter, and where HA first recorded it."""

    entity_id: str
    model: HouseholdModel
    quantity: Quantity  # ENERGY_IMPORT or ENERGY_EXPORT


def backfill_rows(
    model: HouseholdModel, quantity: Quantity, first_ts: float, days: int, step_s: float
) -> list[StatisticRow]:
    """Hourly rows for the `days` before the hour of `first_ts` (the entity's first recorded
    state), oldest first; sums (and states) count from 0 at the start of the first row."""
    current_hour = int(math.floor(first_ts / HOUR_S) * HOUR_S)
    rows: list[StatisticRow] = []
    total = 0.0
    for start in range(current_hour - days * 24 * HOUR_S, current_hour, HOUR_S):
        total += _energy(model, quantity, start, start + HOUR_S, step_s)
        rows.append(StatisticRow(start, total, total))
    return rows


def join_offset(model: HouseholdModel, quantity: Quantity, first_ts: float, sum_before: float, step_s: float) -> float:
    """What to add to the sums the recorder compiled from `first_ts` on (they start at 0 there)
    so they continue `sum_before`, the sum at the start of the hour holding `first_ts`."""
    current_hour = math.floor(first_ts / HOUR_S) * HOUR_S
    return sum_before + _energy(model, quantity, current_hour, first_ts, step_s)


def _energy(model: HouseholdModel, quantity: Quantity, start: float, end: float, step_s: float) -> float:
    imported, exported = model.energy_kwh(start, end, step_s)
    return exported if quantity is Quantity.ENERGY_EXPORT else imported


def energy_entities(bridge_config: Path, registry: Sequence[Mapping[str, Any]]) -> list[EnergyEntity]:
    """The energy entities of the simulated meters, by their unique ids in HA's entity registry."""
    config = load_config(bridge_config)
    by_unique_id = {entry.get("unique_id"): entry["entity_id"] for entry in registry if entry.get("platform") == "mqtt"}
    entities = []
    for source in config.sources:
        if not isinstance(source, SimulatedSourceConfig):
            continue
        model = HouseholdModel(source)
        quantities = [Quantity.ENERGY_IMPORT] + ([Quantity.ENERGY_EXPORT] if model.has_export else [])
        for quantity in quantities:
            # the unique id the HA sink announces (sinks/homeassistant/discovery.py)
            unique_id = f"hems_{config.site.id}_{source.id}_{quantity.value}"
            if unique_id in by_unique_id:
                entities.append(EnergyEntity(by_unique_id[unique_id], model, quantity))
    return entities


def expected_count(bridge_config: Path) -> int:
    """How many energy entities the simulated meters announce."""
    config = load_config(bridge_config)
    return sum(
        1 + HouseholdModel(source).has_export for source in config.sources if isinstance(source, SimulatedSourceConfig)
    )


async def first_numeric_state(
    client: HaStatisticsClient, entity_id: str, since: datetime
) -> tuple[float, float] | None:
    """(epoch s, value) of the entity's first numeric state the recorder has stored since `since`."""
    result = await client.call(
        "history/history_during_period",
        start_time=since.isoformat(),
        entity_ids=[entity_id],
        include_start_time_state=False,
        significant_changes_only=False,
        minimal_response=True,
        no_attributes=True,
    )
    for state in result.get(entity_id, []) if isinstance(result, dict) else []:
        try:
            value = float(state["s"])
        except (KeyError, TypeError, ValueError):
            continue  # unknown / unavailable
        return float(state.get("lu", state.get("lc"))), value
    return None


async def wait_for_entities(client: HaStatisticsClient, bridge_config: Path, deadline: float) -> list[EnergyEntity]:
    """The simulated meters' energy entities once HA has registered them all (or at `deadline`)."""
    want = expected_count(bridge_config)
    entities = energy_entities(bridge_config, await client.call("config/entity_registry/list"))
    while len(entities) < want and time.monotonic() < deadline:
        await asyncio.sleep(1)  # the bridge's discovery has not reached HA yet
        entities = energy_entities(bridge_config, await client.call("config/entity_registry/list"))
    if len(entities) < want:
        print(f"demo-backfill: {want - len(entities)} energy entities were not registered in time", file=sys.stderr)
    return entities


async def first_states(
    client: HaStatisticsClient, entities: list[EnergyEntity], deadline: float
) -> dict[str, tuple[EnergyEntity, float, float]]:
    """entity id -> (entity, T0, E0) of every entity whose first numeric state is stored by `deadline`.

    The recorder commits every commit_interval (300 s on the appliance, packages/hems.yaml), and
    the history API reads only what is committed. It commits what it holds before running any of
    its tasks (recorder/tasks.py, `RecorderTask.commit_before`): the `recorder.purge` service with
    the configured `keep_days` (10: nothing of a fresh demo's goes) is such a task, so the first
    states are read at once instead of up to 5 minutes later.
    """
    since = datetime.now(UTC) - timedelta(days=1)
    found: dict[str, tuple[EnergyEntity, float, float]] = {}
    while True:
        for entity in entities:
            if entity.entity_id not in found and (first := await first_numeric_state(client, entity.entity_id, since)):
                found[entity.entity_id] = (entity, *first)
        if len(found) == len(entities) or time.monotonic() > deadline:
            return found
        await client.call("call_service", domain="recorder", service="purge", service_data={})
        await asyncio.sleep(1)


async def backfill(url: str, token: str, bridge_config: Path, days: int, timeout_s: float) -> int:
    """Import the week of every energy entity; the number of entities not done."""
    deadline = time.monotonic() + timeout_s
    async with HaStatisticsClient(url, token) as client:
        entities = await wait_for_entities(client, bridge_config, deadline)
        firsts = await first_states(client, entities, deadline)
        for entity_id, (entity, first_ts, _) in firsts.items():
            current_hour = math.floor(first_ts / HOUR_S) * HOUR_S
            if any(row.start < current_hour for row in await client.existing_rows(entity_id)):
                print(f"demo-backfill: {entity_id} has a past already: left alone")
                continue
            step_s = max(STEP_S, entity.model.config.interval_s)
            rows = backfill_rows(entity.model, entity.quantity, first_ts, days, step_s)
            await client.import_rows(entity_id, None, rows)
            print(f"demo-backfill: {entity_id}: {len(rows)} hours, {rows[-1].sum:.1f} kWh")
    missing = expected_count(bridge_config) - len(firsts)
    if missing:
        print(
            f"demo-backfill: {missing} energy entities had no recorded state after {timeout_s:.0f} s", file=sys.stderr
        )
    return missing


async def first_compiled_sum(client: HaStatisticsClient, entity_id: str, since: float) -> float | None:
    """The sum of the first 5-minute statistic starting at or after `since` (None: none yet)."""
    result = await client.call(
        "recorder/statistics_during_period",
        start_time=datetime.fromtimestamp(since, UTC).isoformat(),
        statistic_ids=[entity_id],
        period="5minute",
        types=["sum"],
    )
    rows = result.get(entity_id, []) if isinstance(result, dict) else []
    return float(rows[0]["sum"] or 0.0) if rows else None


async def join(url: str, token: str, bridge_config: Path, timeout_s: float) -> int:
    """Lift the compiled sums of every energy entity onto the imported ones; the number not joined."""
    deadline = time.monotonic() + timeout_s
    async with HaStatisticsClient(url, token) as client:
        entities = await wait_for_entities(client, bridge_config, deadline)
        pending = await first_states(client, entities, deadline)
        while pending:
            for entity_id, (entity, first_ts, _) in list(pending.items()):
                current_hour = math.floor(first_ts / HOUR_S) * HOUR_S
                before = [row for row in await client.existing_rows(entity_id) if row.start < current_hour]
                compiled = await first_compiled_sum(client, entity_id, current_hour)
                if not before:
                    del pending[entity_id]  # nothing imported: nothing to join
                    continue
                if compiled is None:
                    continue  # the first 5-minute compile has not run yet
                del pending[entity_id]
                sum_before = max(before, key=lambda row: row.start).sum
                if compiled >= sum_before - SUM_TOLERANCE_KWH:
                    print(f"demo-backfill: {entity_id}: joined already")
                    continue
                step_s = max(STEP_S, entity.model.config.interval_s)
                offset = join_offset(entity.model, entity.quantity, first_ts, sum_before, step_s)
                await client.call(
                    "recorder/adjust_sum_statistics",
                    statistic_id=entity_id,
                    start_time=datetime.fromtimestamp(current_hour, UTC).isoformat(),
                    adjustment=offset,
                    adjustment_unit_of_measurement="kWh",
                )
                print(f"demo-backfill: {entity_id}: joined (+{offset:.3f} kWh from the hour of the first state)")
            if pending and time.monotonic() < deadline:
                await asyncio.sleep(10)
            elif pending:
                break
    if pending:
        print(f"demo-backfill: no 5-minute statistics for {sorted(pending)} after {timeout_s:.0f} s", file=sys.stderr)
    return len(pending)


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Home Assistant's base URL (http://127.0.0.1:PORT)")
    parser.add_argument("--token-file", type=Path, required=True, help="file holding an admin access token")
    parser.add_argument("--bridge-config", type=Path, required=True, help="the bridge's configuration file")
    parser.add_argument("--days", type=int, default=7, help="days of history to write (default 7)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the entities (default 180)")
    parser.add_argument(
        "--join",
        action="store_true",
        help="instead: wait for the recorder's first 5-minute statistics and join them to the week (--timeout 480)",
    )
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip()
    try:
        if args.join:
            missing = asyncio.run(join(args.url, token, args.bridge_config, max(args.timeout, 480.0)))
        else:
            missing = asyncio.run(backfill(args.url, token, args.bridge_config, args.days, args.timeout))
    except BridgeError as err:
        print(f"demo-backfill: {err}", file=sys.stderr)
        return 1
    return 1 if missing else 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
