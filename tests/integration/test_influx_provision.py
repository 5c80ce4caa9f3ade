"""Provisioning and the replication monitor against a CONTRACT DOUBLE of InfluxDB 2's management API.

InfluxDB 2 cannot run on these machines (not in Debian, PyPI or npm; no Docker), so
`helpers.influx_mgmt_double` stands in for it. The double follows InfluxData's published
OpenAPI description (influxdata/openapi, src/oss) and InfluxDB 2.7's JSON for orgs,
buckets, tasks, authorizations, remotes and replications; provisioning talks to it
through influxdb-client exactly as it would to the real server.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from helpers.influx_mgmt_double import InfluxMgmtDouble
from helpers.mosquitto import Mosquitto
from helpers.mqtt import recording
from meterbridge.config import BridgeConfig
from meterbridge.influx_provision import ProvisionError, ProvisionSettings, provision
from meterbridge.sinks.homeassistant import HomeAssistantSink
from meterbridge.sinks.influx.replication import ReplicationMonitor

CLOUD = {
    "INFLUX_CLOUD_URL": "https://cloud.example.invalid",
    "INFLUX_CLOUD_TOKEN": "cloud-token-1",
    "INFLUX_CLOUD_ORG_ID": "c0ffee0000000001",
    "INFLUX_CLOUD_BUCKET": "community",
}


@pytest.fixture
async def double() -> AsyncIterator[InfluxMgmtDouble]:
    server = InfluxMgmtDouble()
    await server.start()
    yield server
    await server.stop()


def env(double: InfluxMgmtDouble, tokens: Path, **extra: str) -> dict[str, str]:
    return {
        "INFLUX_URL": double.url,
        "INFLUX_ADMIN_TOKEN": double.admin_token,
        "INFLUX_RETENTION": "30d",
        "INFLUX_TOKENS_DIR": str(tokens),
        **extra,
    }


async def run(variables: dict[str, str]) -> Any:
    return await asyncio.to_thread(provision, ProvisionSettings.from_env(variables))


async def test_first_run_creates_second_changes_nothing(double: InfluxMgmtDouble, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    first = await run(env(double, tokens))
    assert "created bucket meters" in first.changes
    buckets = {b["name"]: b for b in double.buckets.values()}
    assert set(buckets) == {"meters", "meters_1h", "homeassistant"}
    assert buckets["meters"]["retentionRules"][0]["everySeconds"] == 30 * 86400
    assert buckets["meters_1h"]["retentionRules"][0]["everySeconds"] == 0
    [task] = double.tasks.values()
    assert task["name"] == "hems_downsample_1h"
    assert task["every"] == "1h"
    assert 'to(bucket: "meters_1h")' in task["flux"]
    auths = {a["description"]: a for a in double.authorizations.values()}
    assert set(auths) == {"hems:bridge", "hems:homeassistant", "hems:dashboard"}
    bridge = {
        (p["action"], p["resource"]["type"], p["resource"].get("id")) for p in auths["hems:bridge"]["permissions"]
    }
    assert ("write", "buckets", buckets["meters"]["id"]) in bridge
    assert not any(action == "write" and rid != buckets["meters"]["id"] for action, _, rid in bridge)
    dashboard = auths["hems:dashboard"]["permissions"]
    assert all(p["action"] == "read" for p in dashboard)
    for name in ("bridge", "homeassistant", "dashboard"):
        path = tokens / name / f"{name}.token"
        assert path.read_text().strip() == auths[f"hems:{name}"]["token"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not double.remotes
    assert not double.replications

    before = list(double.mutations)
    second = await run(env(double, tokens))
    assert second.changes == []
    assert double.mutations == before


async def test_changed_retention_and_lost_token_file_are_reconciled(double: InfluxMgmtDouble, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    await run(env(double, tokens))
    (tokens / "bridge" / "bridge.token").unlink()
    report = await run(env(double, tokens, INFLUX_RETENTION="7d"))
    assert sorted(report.changes) == ["re-issued token bridge", "retention of bucket meters: 2592000 -> 604800 s"]
    assert len(double.authorizations) == 3


async def test_cloud_replication_create_update_remove(double: InfluxMgmtDouble, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    report = await run(env(double, tokens, **CLOUD))
    assert "created remote hems-cloud" in report.changes
    assert "created replication hems-cloud-meters" in report.changes
    [remote] = double.remotes.values()
    [repl] = double.replications.values()
    meters = next(b for b in double.buckets.values() if b["name"] == "meters_1h")
    assert remote["remoteURL"] == CLOUD["INFLUX_CLOUD_URL"]
    assert remote["remoteOrgID"] == CLOUD["INFLUX_CLOUD_ORG_ID"]
    assert double.remote_tokens[remote["id"]] == "cloud-token-1"
    assert "cloud-token-1" not in str(remote)
    assert repl["localBucketID"] == meters["id"]
    assert repl["RemoteBucketName"] == "community"
    assert repl["remoteID"] == remote["id"]
    assert repl["maxAgeSeconds"] == 604800

    before = list(double.mutations)
    assert (await run(env(double, tokens, **CLOUD))).changes == []
    assert double.mutations == before

    changed = {
        **CLOUD,
        "INFLUX_CLOUD_URL": "https://other.example.invalid",
        "INFLUX_CLOUD_TOKEN": "cloud-token-2",
        "INFLUX_REPLICATION_MAX_QUEUE_BYTES": "100000000",
        "INFLUX_REPLICATION_MAX_AGE_S": "2d",
    }
    report = await run(env(double, tokens, **changed))
    assert sorted(report.changes) == ["updated remote hems-cloud", "updated replication hems-cloud-meters"]
    [remote2] = double.remotes.values()
    [repl2] = double.replications.values()
    assert remote2["id"] == remote["id"]
    assert repl2["id"] == repl["id"]
    assert remote2["remoteURL"] == "https://other.example.invalid"
    assert double.remote_tokens[remote["id"]] == "cloud-token-2"
    assert repl2["maxQueueSizeBytes"] == 100_000_000
    assert repl2["maxAgeSeconds"] == 2 * 86400

    token_only = {**changed, "INFLUX_CLOUD_TOKEN": "cloud-token-3"}
    assert (await run(env(double, tokens, **token_only))).changes == ["updated remote hems-cloud"]
    assert double.remote_tokens[remote["id"]] == "cloud-token-3"

    # the raw bucket instead of the hourly one: the stream is made again from `meters`
    raw = {**token_only, "INFLUX_REPLICATION_SOURCE": "raw"}
    report = await run(env(double, tokens, **raw))
    assert report.changes == [
        "removed replication hems-cloud-meters of another bucket",
        "created replication hems-cloud-meters",
    ]
    [repl3] = double.replications.values()
    assert repl3["localBucketID"] == next(b["id"] for b in double.buckets.values() if b["name"] == "meters")
    assert (await run(env(double, tokens, **raw))).changes == []
    with pytest.raises(ProvisionError, match="INFLUX_REPLICATION_SOURCE"):
        await run(env(double, tokens, **{**raw, "INFLUX_REPLICATION_SOURCE": "hourly"}))

    report = await run(env(double, tokens))
    assert sorted(report.changes) == ["removed remote hems-cloud", "removed replication hems-cloud-meters"]
    assert not double.remotes
    assert not double.replications


async def test_wrong_admin_token_is_a_clear_error(double: InfluxMgmtDouble, tmp_path: Path) -> None:
    variables = env(double, tmp_path / "tokens", INFLUX_ADMIN_TOKEN="wrong")
    with pytest.raises(ProvisionError, match=r"organisation at http://127\.0\.0\.1"):
        await run(variables)


async def test_replication_health_reaches_home_assistant(
    double: InfluxMgmtDouble, tmp_path: Path, broker: Mosquitto, base_topic: str
) -> None:
    tokens = tmp_path / "tokens"
    await run(env(double, tokens, **CLOUD))
    double.set_replication_status("hems-cloud-meters", 123_456, 503, "remote unavailable")
    prefix = f"{base_topic}_ha"
    config = BridgeConfig.model_validate(
        {
            "site": {"id": "home"},
            "mqtt": broker.bridge_mqtt(base_topic),
            "homeassistant": {"discovery_prefix": prefix},
            # the bridge's own least-privilege token, as provisioned
            "influx": {
                "url": double.url,
                "token": (tokens / "bridge" / "bridge.token").read_text().strip(),
                "replication_poll_s": 0.3,
            },
        }
    )
    sink = HomeAssistantSink(config.mqtt_context)  # announces what the monitor describes, as in the bridge
    monitor = ReplicationMonitor(config.mqtt_context, config.influx, sink.catalog)
    async with recording(broker, f"{base_topic}/#", f"{prefix}/#") as rec:
        await sink.start()
        await monitor.start()
        try:
            state_topic = f"{base_topic}/influx/replication"
            await rec.wait_for(lambda r: state_topic in r.last)
            assert rec.json(state_topic) == {
                "hems_cloud_meters": {
                    "queue_bytes": 123456,
                    "pending_bytes": 123456,
                    "status": "HTTP 503: remote unavailable",
                    "problem": True,
                }
            }
            queue_config = f"{prefix}/sensor/hems/hems_influx_replication_hems_cloud_meters_queue/config"
            problem_config = f"{prefix}/binary_sensor/hems/hems_influx_replication_hems_cloud_meters_problem/config"
            # announced by the HA sink, on a connection of its own: not ordered with the monitor's state
            await rec.wait_for(lambda r: queue_config in r.last and problem_config in r.last)
            queue = rec.json(queue_config)
            assert queue["device_class"] == "data_size"
            assert queue["unit_of_measurement"] == "B"
            assert queue["unique_id"] == "hems_home_influx_replication_hems_cloud_meters_queue"
            problem = rec.json(problem_config)
            assert problem["device_class"] == "problem"
            await rec.wait_for(lambda r: r.last.get(f"{base_topic}/influx/replication/availability") == b"online")

            double.set_replication_status("hems-cloud-meters", 0, 204, None)
            await rec.wait_for(lambda r: r.json(state_topic)["hems_cloud_meters"]["status"] == "ok")
            assert rec.json(state_topic)["hems_cloud_meters"]["problem"] is False

            await asyncio.to_thread(provision, ProvisionSettings.from_env(env(double, tokens)))  # cloud unset
            await rec.wait_for(lambda r: r.json(state_topic) == {})
            await rec.wait_for(lambda r: r.last.get(queue_config) == b"")
        finally:
            await monitor.close()
            await sink.close()
