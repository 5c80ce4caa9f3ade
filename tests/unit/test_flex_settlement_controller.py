"""The controller's side of settlement (issue 27): the ledger it writes, events it settles, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from integration.flexutil import SETTLE_END, SETTLE_SITE_KWH, settlement_event, write_settlement_history
from meterbridge.app import build_flex
from meterbridge.config import BridgeConfig
from meterbridge.flex import controller as controller_module
from meterbridge.flex.controller import FlexController
from meterbridge.flex.ledger import read_ledger
from meterbridge.ha_entities import EntityCatalog
from meterbridge.model import Point, Quantity, Reading


def make(tmp_path: Path, now: list[datetime]) -> FlexController:
    config = BridgeConfig.model_validate(
        {
            "mqtt": {"username": "bridge", "password": "unused"},
            "flex": {
                "enabled": True,
                "site_meter_id": "site",
                "assets": [
                    {
                        "id": "immersion",
                        "actuator": {"type": "mqtt", "command_topic": "x/immersion"},
                        "rated_power_w": 1000,
                        "meter_id": "immersion",
                    }
                ],
                "state_path": str(tmp_path / "flex-state.json"),
                "log_path": str(tmp_path / "flex-events.jsonl"),
            },
        }
    )
    return build_flex(config.mqtt_context, config.flex, EntityCatalog(), clock=lambda: now[0])


async def test_closed_periods_are_written_in_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [datetime(2026, 12, 1, 10, tzinfo=UTC)]
    flex = make(tmp_path, now)
    t0 = now[0]
    readings = [
        Reading.of(meter, Quantity.ENERGY_IMPORT, 1.0 + k / 100, t0 + timedelta(minutes=k))
        for k in range(0, 95, 5)
        for meter in ("site", "immersion", "not_flex")
    ]
    await flex.handle(readings)
    assert not flex.ledger.path.exists()  # closed periods wait for the batch
    monkeypatch.setattr(controller_module, "LEDGER_BATCH_S", 0.0)
    await flex.tick()
    records = read_ledger(flex.ledger.path).records
    assert {m: [r.start.hour * 60 + r.start.minute for r in rs] for m, rs in records.items()} == {
        "site": [600, 630, 660],
        "immersion": [600, 630, 660],
    }
    await flex.close()  # the open period is written at shutdown
    assert len(read_ledger(flex.ledger.path).records["site"]) == 4


async def test_an_event_is_settled_once_its_last_period_is_closed(tmp_path: Path) -> None:
    now = [SETTLE_END - timedelta(hours=2)]
    flex = make(tmp_path, now)
    published: list[object] = []
    flex.publish = published.append
    write_settlement_history(flex.ledger.path)
    assert flex.submit_event(settlement_event())
    now[0] = SETTLE_END + timedelta(minutes=31)
    assert await flex.settle_due(now[0]) == []  # the period after the event (and the batch) not closed yet
    now[0] = SETTLE_END + timedelta(minutes=32)
    (delivery,) = await flex.settle_due(now[0])
    assert delivery.event.event_id == "settle-1"
    assert all(isinstance(p, Point) and p.measurement == "flex_delivery" for p in published)
    assert len(published) == 2 * 3 * 3  # site and immersion, three methods, two periods and a total
    document = flex.state_document()
    assert document["delivered_kwh"] == pytest.approx(sum(SETTLE_SITE_KWH))
    assert document["delivered_share"] == 80.0
    assert [d["event_id"] for d in document["deliveries"]] == ["settle-1"]
    assert await flex.settle_due(now[0] + timedelta(hours=1)) == []  # settled once
    # a restart keeps the history HA shows
    again = make(tmp_path, now)
    assert again.state_document()["delivered_event"] == "settle-1"


async def test_an_unreadable_ledger_is_retried_later_not_every_tick(tmp_path: Path) -> None:
    now = [SETTLE_END - timedelta(hours=2)]
    flex = make(tmp_path, now)
    flex.ledger.path.mkdir(parents=True)  # a directory where the file should be
    assert flex.submit_event(settlement_event())
    due = SETTLE_END + timedelta(hours=1)
    assert await flex.settle_due(due) == []
    assert flex.stats.errors["settlement"] == 1
    assert await flex.settle_due(due + timedelta(minutes=1)) == []
    assert flex.stats.errors["settlement"] == 1  # not tried again so soon
    flex.ledger.path.rmdir()
    write_settlement_history(flex.ledger.path)
    (delivery,) = await flex.settle_due(due + timedelta(minutes=6))
    assert delivery.status == "delivered"
