"""Shelly fleet operations against simulated devices on a real Mosquitto (issue 21).

`meter-bridge shelly update`: a staged rollout across 10 simulated devices (the simulator follows
Shelly's Gen2 API for `Shelly.CheckForUpdate`/`Shelly.Update` and comes back with the new build on
`<prefix>/online` and in `Shelly.GetDeviceInfo`); a failing canary stops it before the rest, a
failure after the canary stops it there, never more than `--parallel` devices reboot at once, a
rerun after success changes nothing, and a relay that a real flex holds during an event is not
updated. `meter-bridge shelly scan` finds the simulators over real mDNS on 127.0.0.1 and by
probing an address range, and `provision --all-found` provisions what it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.mosquitto import Mosquitto
from helpers.mqtt import client_for
from helpers.release import ReleaseBroker
from helpers.shelly_sim import ShellySim
from integration.flexutil import config_data, wait_until
from meterbridge.app import Bridge
from meterbridge.config import BridgeConfig
from meterbridge.sources.shelly.fleet import fleet_link
from meterbridge.sources.shelly.update import FleetReport, UpdateSettings, rollout

pytestmark = pytest.mark.slow

NEW = "1.4.4"
MODELS = ("plus1pm", "pmminig3", "pro3em", "proem")


@contextlib.asynccontextmanager
async def fleet(broker: Mosquitto, count: int, offer: str | None = NEW) -> AsyncIterator[list[ShellySim]]:
    """`count` devices online under `shelly/<device id>`, sorted by device id, offered `offer`."""
    sims = [ShellySim(MODELS[i % len(MODELS)], mac=f"A8032A{i:06X}") for i in range(count)]
    for sim in sims:
        sim.mqtt_config["topic_prefix"] = f"shelly/{sim.device_id}"
        sim.configure_mqtt(f"{broker.host}:{broker.port}", "bridge", broker.password("bridge"))
        if offer is not None:
            sim.offer(offer)
    try:
        await asyncio.gather(*(s.start() for s in sims))
        await asyncio.gather(*(s.wait_connected() for s in sims))
        yield sorted(sims, key=lambda s: s.device_id)
    finally:
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)


def bridge_config(broker: Mosquitto, base: str, sims: list[ShellySim]) -> dict[str, Any]:
    return {
        "site": {"id": "home"},
        "mqtt": broker.bridge_mqtt(base),
        "homeassistant": {"discovery_prefix": f"{base}_ha"},
        "health": {"enabled": False},
        "sources": [{"type": "shelly", "id": "sh", "devices": [{"prefix": s.prefix} for s in sims]}],
    }


async def run_rollout(broker: Mosquitto, base: str, sims: list[ShellySim], settings: UpdateSettings) -> FleetReport:
    """`rollout` in this process over the bridge's broker."""
    config = BridgeConfig.model_validate(bridge_config(broker, base, sims))
    async with fleet_link(config.mqtt, f"test-update-{base}") as link:
        return await rollout(link, [s.prefix for s in sims], settings, site="home")


async def run_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meterbridge.cli", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Flashing:
    """Counts the simulators flashing at once (wraps `ShellySim._flash`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = self.most = 0
        original = ShellySim._flash

        async def counted(sim: ShellySim, build: dict[str, str]) -> None:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                await original(sim, build)
                if sim.update_outcome != "offline":
                    await sim.wait_connected(30)  # rebooting until it is back on the broker (a hang bound)
            finally:
                self.now -= 1

        monkeypatch.setattr(ShellySim, "_flash", counted)


async def test_failing_canary_stops_the_rollout_before_the_rest(
    broker: Mosquitto, base_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flashing = Flashing(monkeypatch)
    async with fleet(broker, 10) as sims:
        sims[0].update_outcome = "offline"  # the canary (first by device id) never comes back
        report = await run_rollout(broker, base_topic, sims, UpdateSettings(canary=1, parallel=3, reboot_timeout_s=3))
        by_id = {d.device_id: d for d in report.devices}
        assert report.result == "failed"
        assert report.stopped_by == sims[0].device_id
        canary = by_id[sims[0].device_id]
        assert (canary.status, canary.canary) == ("failed", True)
        assert "not back online" in (canary.error or "")
        assert {by_id[s.device_id].status for s in sims[1:]} == {"not_started"}
        assert [s.updates for s in sims[1:]] == [[]] * 9, "nothing after the failed canary"
        assert json.loads(report.to_json())["counts"] == {"failed": 1, "not_started": 9}
        assert flashing.most == 1


async def test_failure_after_the_canary_stops_there_and_parallel_is_bounded(
    broker: Mosquitto, base_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flashing = Flashing(monkeypatch)
    async with fleet(broker, 10) as sims:
        sims[3].update_outcome = "old_version"  # boots the old build again
        report = await run_rollout(broker, base_topic, sims, UpdateSettings(canary=1, parallel=2, reboot_timeout_s=30))
        by_id = {d.device_id: d for d in report.devices}
        assert report.result == "failed"
        assert report.stopped_by == sims[3].device_id
        assert by_id[sims[0].device_id].status == "updated"
        assert by_id[sims[3].device_id].status == "failed"
        assert f"came back on 1.3.3, not {NEW}" in (by_id[sims[3].device_id].error or "")
        statuses = [by_id[s.device_id].status for s in sims]
        # at most one more in flight beside the failing one; the rest never started
        assert statuses.count("not_started") >= 5, statuses
        assert flashing.most == 2


async def test_rollout_reports_bad_readings(broker: Mosquitto, base_topic: str) -> None:
    async with fleet(broker, 2) as sims:
        sims[0].update_outcome = "bad_readings"
        report = await run_rollout(broker, base_topic, sims, UpdateSettings(reboot_timeout_s=30.0))
        assert report.devices[0].status == "failed"
        assert "no readings" in (report.devices[0].error or "")
        assert report.devices[1].status == "not_started"


async def test_update_command_then_rerun_changes_nothing(broker: Mosquitto, base_topic: str, tmp_path: Path) -> None:
    async with fleet(broker, 10) as sims:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(bridge_config(broker, base_topic, sims)))
        identities = tmp_path / "identities"  # none: the configured devices are the home's
        argv = ("shelly", "update", "--config", str(config), "--identities", str(identities), "--report", "json",
                "--parallel", "3", "--reboot-timeout", "20")  # fmt: skip
        code, out, err = await run_cli(*argv, "--check")
        assert code == 0, err + out
        assert json.loads(out)["counts"] == {"available": 10}
        assert [s.updates for s in sims] == [[]] * 10, "--check only asks"
        code, out, err = await run_cli(*argv)
        assert code == 0, err + out
        first = json.loads(out)
        assert first["result"] == "ok"
        assert first["counts"] == {"updated": 10}
        assert all(s.version == NEW for s in sims)
        assert all(d["installed"] == NEW for d in first["devices"])
        calls_before = [len(s.calls) for s in sims]
        reboots_before = [s.reboots for s in sims]
        code, out, err = await run_cli(*argv)
        assert code == 0, err + out
        second = json.loads(out)
        assert second["counts"] == {"current": 10}
        assert [s.reboots for s in sims] == reboots_before
        for sim, before in zip(sims, calls_before, strict=True):
            assert sim.calls[before:] == ["Shelly.GetDeviceInfo", "Shelly.CheckForUpdate"]


async def test_a_relay_that_flex_holds_is_not_updated_during_the_event(
    broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    async with fleet(broker, 3) as sims:
        heater = next(s for s in sims if s.model.app == "Plus1PM")  # a relay, on
        data = config_data(broker, base_topic, tmp_path, {})
        data["flex"]["assets"] = [
            {
                "id": "immersion", "kind": "immersion_heater", "rated_power_w": 3000, "min_on_s": 0,
                "min_off_s": 0, "max_shed_s": 600, "actuator": {"type": "shelly", "prefix": heater.prefix},
            }
        ]  # fmt: skip
        data["sources"] = bridge_config(broker, base_topic, sims)["sources"]
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(data))
        event = {"id": "hold-1", "start": datetime.now(UTC).isoformat(), "duration_s": 300, "direction": "down",
                 "target_w": 1000}  # fmt: skip
        async with Bridge(BridgeConfig.model_validate(data)), client_for(broker, "bridge") as client:
            for _ in range(20):  # not retained: re-send until flex acts
                await client.publish(f"{base_topic}/flex/event", json.dumps(event).encode(), qos=1)
                with contextlib.suppress(AssertionError):
                    await wait_until(lambda: not heater.status["switch:0"]["output"], 1, "relay off for the event")
                    break
            code, out, err = await run_cli(
                "shelly", "update", "--config", str(config_file), "--identities", str(tmp_path / "ids"),
                "--report", "json", "--reboot-timeout", "20",
            )  # fmt: skip
        report = json.loads(out)
        assert code == 3, err + out  # incomplete: come back after the event
        by_id = {d["device_id"]: d for d in report["devices"]}
        assert by_id[heater.device_id]["status"] == "held"
        assert heater.updates == []
        assert heater.version == "1.3.3"
        assert {by_id[s.device_id]["status"] for s in sims if s is not heater} == {"updated"}


async def test_scan_finds_devices_by_mdns_and_range_and_provision_all_found(
    broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    announced = [ShellySim("plus1pm"), ShellySim("pro3em")]
    probed = ShellySim("pmminig3")
    sims = [*announced, probed]
    try:
        for sim in sims:
            await sim.start()
        for sim in announced:
            await sim.announce()
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(bridge_config(broker, base_topic, [])))
        identities = tmp_path / "identities"
        scan = ("shelly", "scan", "--config", str(config), "--identities", str(identities), "--interface", "127.0.0.1",
                "--mdns-seconds", "3", "--range", "127.0.0.0/30", "--port", str(probed.port), "--json")  # fmt: skip
        code, out, err = await run_cli(*scan)
        assert code == 0, err
        found = {d["device_id"]: d for d in json.loads(out)}
        assert set(found) == {s.device_id for s in sims}, (out, err)
        assert found[announced[0].device_id]["found_by"] == ["mdns"]
        assert found[probed.device_id]["found_by"] == ["probe"]
        assert found[probed.device_id]["host"] == probed.host
        row = found[announced[1].device_id]
        assert (row["app"], row["firmware"], row["provisioned"], row["online"]) == ("Pro3EM", "1.3.3", False, False)

        # provision --all-found: the scan's devices get identities and the broker's address
        code, out, err = await run_cli(
            "shelly", "provision", "--all-found", "--config", str(config), "--identities", str(identities),
            "--interface", "127.0.0.1", "--mdns-seconds", "3", "--range", "127.0.0.0/30", "--port", str(probed.port),
            "--mqtt-server", f"{broker.host}:{broker.port}", "--no-wait",
        )  # fmt: skip
        assert code == 0, err + out
        for sim in sims:
            assert (identities / sim.device_id).is_file()
            assert {**sim.mqtt_config, **(sim.pending_mqtt or {})}["topic_prefix"] == f"shelly/{sim.device_id}"
        code, out, _ = await run_cli(*scan)
        assert {d["provisioned"] for d in json.loads(out)} == {True}
    finally:
        for sim in sims:
            await sim.stop()


async def test_update_and_logs_on_the_release_broker_with_device_identities(
    release_broker: ReleaseBroker, tmp_path: Path
) -> None:
    """Each device logs in as itself, confined to `shelly/<id>/#` by the release's ACL: the
    update's RPC replies and the debug log lines stay inside that prefix and still arrive."""
    sims = [ShellySim("plus1pm"), ShellySim("pro3em")]
    for sim in sims:
        password = release_broker.add_shelly(sim.device_id)
        sim.mqtt_config["topic_prefix"] = f"shelly/{sim.device_id}"
        sim.configure_mqtt(f"127.0.0.1:{release_broker.port}", sim.device_id, password)
        sim.offer(NEW)
        await sim.start()
    try:
        await asyncio.gather(*(s.wait_connected() for s in sims))
        config = tmp_path / "config.yaml"
        mqtt = {"host": "127.0.0.1", "port": release_broker.port, "username": "bridge",
                "password": release_broker.password("bridge")}  # fmt: skip
        config.write_text(yaml.safe_dump({"site": {"id": "home"}, "mqtt": mqtt, "sources": []}))
        # the home's devices are the provisioned identities (other tests' devices share this
        # session broker: name ours)
        code, out, err = await run_cli(
            "shelly", "update", *(s.device_id for s in sims), "--config", str(config),
            "--identities", str(release_broker.identities), "--report", "json", "--reboot-timeout", "20",
        )  # fmt: skip
        assert code == 0, err + out
        assert json.loads(out)["counts"] == {"updated": 2}
        assert [s.version for s in sims] == [NEW, NEW]
        log = tmp_path / "debug.log"
        code, _, err = await run_cli(
            "shelly", "logs", sims[0].device_id, "--for", "1s", "--out", str(log), "--config", str(config)
        )
        assert code == 0, err
        assert log.read_text().startswith(sims[0].device_id)
        assert not sims[0].debug_config["mqtt"]["enable"]
    finally:
        for sim in sims:
            await sim.stop()
