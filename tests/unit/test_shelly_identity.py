"""One MQTT identity per Shelly: the store provisioning writes (and the broker reads), the meter
ids of provisioned prefixes, and RPC replies accepted only from the device that was asked."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from meterbridge.errors import ConfigError
from meterbridge.sources.shelly.identity import DEVICE_ID, PASSWORD, ShellyIdentityStore, device_prefix
from meterbridge.sources.shelly.parser import device_slug
from meterbridge.sources.shelly.relay import ShellyMqttRpc

DEVICE = "shellypmminig3-84fce63ad204"


def test_identity_is_made_once_and_kept(tmp_path: Path) -> None:
    store = ShellyIdentityStore(tmp_path / "ids")
    first, created = store.get_or_create(DEVICE)
    again, created_again = store.get_or_create(DEVICE)
    assert (created, created_again) == (True, False)
    assert again == first
    assert first.username == DEVICE
    assert first.prefix == f"shelly/{DEVICE}" == device_prefix(DEVICE)
    assert PASSWORD.match(first.password)
    assert len(first.password) == 32
    path = tmp_path / "ids" / DEVICE
    assert path.read_text() == first.password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.device_ids() == [DEVICE]
    assert first.password not in repr(first)
    assert [p.name for p in (tmp_path / "ids").iterdir()] == [DEVICE], "no temporary file left"


def test_each_device_gets_its_own_password(tmp_path: Path) -> None:
    store = ShellyIdentityStore(tmp_path)
    a, _ = store.get_or_create("shellyplus1pm-a8032ab12345")
    b, _ = store.get_or_create(DEVICE)
    assert a.password != b.password


def test_unusable_stored_password_is_replaced(tmp_path: Path) -> None:
    (tmp_path / DEVICE).write_text("short")
    identity, created = ShellyIdentityStore(tmp_path).get_or_create(DEVICE)
    assert created
    assert (tmp_path / DEVICE).read_text() == identity.password


@pytest.mark.parametrize("name", ["bridge", "shelly", "../etc/passwd", "shellyplus1pm-A8032AB12345", "shellyx-123"])
def test_only_shelly_device_ids_get_an_identity(tmp_path: Path, name: str) -> None:
    assert not DEVICE_ID.match(name)
    with pytest.raises(ConfigError, match="not a Shelly Gen2\\+ device id"):
        ShellyIdentityStore(tmp_path).get_or_create(name)
    assert not list(tmp_path.iterdir())


def test_unwritable_directory_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=str(blocker)):
        ShellyIdentityStore(blocker / "ids").get_or_create(DEVICE)


def test_provisioned_prefix_gives_the_same_meter_ids_as_the_default_prefix() -> None:
    assert device_slug(f"shelly/{DEVICE}") == device_slug(DEVICE) == "shellypmminig3_84fce63ad204"
    assert device_slug("home/kitchen/plug") == "home_kitchen_plug"


class _Client:
    """Records what an RPC caller subscribes to and publishes (the broker side is tested elsewhere)."""

    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        self.subscribed.append(topic)

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, json.loads(payload)))


async def test_rpc_replies_come_from_inside_the_asked_devices_prefix() -> None:
    client = _Client()
    rpc = ShellyMqttRpc(client, "meter-bridge-home-shelly-shelly", timeout_s=30)  # type: ignore[arg-type]
    pump, heater = "shelly/shellyplus1pm-aaaaaaaaaaaa", "shelly/shellyplus1pm-bbbbbbbbbbbb"
    call = asyncio.create_task(rpc.call(pump, "Switch.GetStatus", {"id": 0}))
    while not client.published:
        await asyncio.sleep(0)
    topic, request = client.published[0]
    assert topic == f"{pump}/rpc"
    assert request["src"] == f"{pump}/replies/meter-bridge-home-shelly-shelly"
    assert client.subscribed == [f"{request['src']}/rpc"]
    reply = json.dumps({"id": request["id"], "src": "x", "result": {"output": True}}).encode()
    # the same reply on another device's topic (which that device may write) is not taken
    assert not rpc.owns(f"{heater}/replies/meter-bridge-home-shelly-shelly/rpc")
    rpc.handle_reply(f"{heater}/replies/meter-bridge-home-shelly-shelly/rpc", reply)
    assert not call.done()
    assert rpc.owns(f"{request['src']}/rpc")
    rpc.handle_reply(f"{request['src']}/rpc", reply)
    assert await call == {"output": True}
    second = asyncio.create_task(rpc.call(pump, "Shelly.GetStatus"))
    while len(client.published) < 2:
        await asyncio.sleep(0)
    rpc.handle_reply(
        f"{request['src']}/rpc", json.dumps({"id": client.published[1][1]["id"], "src": "x", "result": {}}).encode()
    )
    assert await second == {}
    assert client.subscribed == [f"{request['src']}/rpc"], "subscribed once per device"
