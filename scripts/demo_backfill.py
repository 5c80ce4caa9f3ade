"""Give the demo's Home Assistant a past: a week of the simulated household in long-term statistics.

Used by `make demo` (scripts/demo.sh) once Home Assistant is onboarded:

    python scripts/demo_backfill.py --url http://127.0.0.1:18123 --token-file .demo/ha_token \\
        --bridge-config .demo/bridge/config.yaml [--days 7]

For every energy entity of every `simulated` meter in the bridge's configuration, hourly rows
for the `days` before the entity's first recorded state are written with
`recorder/import_statistics` into the entity's own statistic (`sensor.hems_grid_energy_import`,
source `recorder`), computed from the same `Household` the live meters read
(meterbridge/sources/simulated.py), so the Energy dashboard has charts at once.

Joining the live data (Home Assistant 2026.10, homeassistant/components/sensor/recorder.py
`compile_statistics`): the recorder continues a `total_increasing` sum from the newest
*short-term* (5-minute) statistic only; the websocket imports only hourly rows, so the first
compile starts the sum at 0, with the entity's first recorded numeric state E0 (at T0) as its
zero point. The hourly rows are compiled from the 5-minute ones, and every chart shows a sum's
change. So the imported rows carry sums relative to that same zero point: the row of the hour
ending at H has sum = energy(H..T0) negated and state = E0 + sum (the meter reading then). The
hour holding T0 then charts energy(hour start..T0) from the model plus what the meter counted
after T0, and the sum never jumps.

An entity that already has hourly rows before its first state's hour (a second `make demo` on
the same data) is left alone. Exit 0 when every entity is done or skipped, 1 otherwise.
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
from meterbridge.sources.simulated import HouseholdModel, SimulatedSourceConfig
from meterbridge.statistics import HOUR_S, HaStatisticsClient, StatisticRow

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
    model: HouseholdModel, quantity: Quantity, first_ts: float, first_kwh: float, days: int, step_s: float
) -> list[StatisticRow]:
    """Hourly rows for the `days` before the hour of `first_ts`, sums relative to the zero point.

    `first_ts`/`first_kwh`: the entity's first recorded state (the recorder's zero point).
    Row starts are whole hours; the newest row ends where the hour of `first_ts` begins.
    """
    export = quantity is Quantity.ENERGY_EXPORT

    def energy(start: float, end: float) -> float:
        imported, exported = model.energy_kwh(start, end, step_s)
        return exported if export else imported

    current_hour = math.floor(first_ts / HOUR_S) * HOUR_S
    # energy from the end of each row to the zero point, newest row first
    after = energy(current_hour, first_ts)
    rows: list[StatisticRow] = []
    for start in range(int(current_hour) - HOUR_S, int(current_hour) - (days * 24 + 1) * HOUR_S, -HOUR_S):
        rows.append(StatisticRow(start, first_kwh - after, -after))
        after += energy(start, start + HOUR_S)
    rows.reverse()
    return rows


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


async def backfill(url: str, token: str, bridge_config: Path, days: int, timeout_s: float) -> int:
    """Backfill every energy entity of the simulated meters; the number of entities not done."""
    deadline = time.monotonic() + timeout_s
    since = datetime.now(UTC) - timedelta(days=1)
    async with HaStatisticsClient(url, token) as client:
        want = expected_count(bridge_config)
        entities = energy_entities(bridge_config, await client.call("config/entity_registry/list"))
        while len(entities) < want and time.monotonic() < deadline:
            await asyncio.sleep(1)  # the bridge's discovery has not reached HA yet
            entities = energy_entities(bridge_config, await client.call("config/entity_registry/list"))
        pending = {entity.entity_id: entity for entity in entities}
        while pending and time.monotonic() < deadline:
            for entity_id, entity in list(pending.items()):
                # the recorder commits every commit_interval (30 s on the appliance): wait for it
                first = await first_numeric_state(client, entity_id, since)
                if first is None:
                    continue
                del pending[entity_id]
                first_ts, first_kwh = first
                current_hour = math.floor(first_ts / HOUR_S) * HOUR_S
                if any(row.start < current_hour for row in await client.existing_rows(entity_id)):
                    print(f"demo-backfill: {entity_id} has a past already: left alone")
                    continue
                step_s = max(STEP_S, entity.model.config.interval_s)
                rows = backfill_rows(entity.model, entity.quantity, first_ts, first_kwh, days, step_s)
                await client.import_rows(entity_id, None, rows)
                print(f"demo-backfill: {entity_id}: {len(rows)} hours, {-rows[0].sum:.1f} kWh")
            if pending:
                await asyncio.sleep(1)
    missing = want - len(entities) + len(pending)
    if missing:
        print(
            f"demo-backfill: {missing} energy entities had no recorded state after {timeout_s:.0f} s", file=sys.stderr
        )
    return missing


def main(argv: list[str] | None = None) -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="Home Assistant's base URL (http://127.0.0.1:PORT)")
    parser.add_argument("--token-file", type=Path, required=True, help="file holding an admin access token")
    parser.add_argument("--bridge-config", type=Path, required=True, help="the bridge's configuration file")
    parser.add_argument("--days", type=int, default=7, help="days of history to write (default 7)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the entities (default 180)")
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip()
    try:
        missing = asyncio.run(backfill(args.url, token, args.bridge_config, args.days, args.timeout))
    except BridgeError as err:
        print(f"demo-backfill: {err}", file=sys.stderr)
        return 1
    return 1 if missing else 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
