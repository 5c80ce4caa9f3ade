"""The mqtt service's entrypoint, run natively: users, ACL, config, and a real Mosquitto that
refuses anonymous clients and topics outside each user's ACL (asserted on the subscriber); Shelly
device identities taken in (and revoked) while the broker runs."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from helpers import image_users
from helpers.release import MOSQUITTO_DIR, ReleaseBroker
from meterbridge.sources.shelly.identity import DEFAULT_IDENTITIES_DIR

USERS = ("bridge", "homeassistant", "zigbee2mqtt", "healthcheck")
DEVICE_A = "shellyplus1pm-a8032ab12345"
DEVICE_B = "shellypmminig3-84fce63ad204"


def client(broker: ReleaseBroker, user: str | None, password: str | None = None) -> aiomqtt.Client:
    """An aiomqtt client as `user` (None: anonymous)."""
    if user is None:
        return aiomqtt.Client("127.0.0.1", broker.port)
    return aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password or broker.password(user))


async def test_anonymous_client_is_refused(release_broker: ReleaseBroker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(release_broker, None):
            pass


async def test_wrong_password_is_refused(release_broker: ReleaseBroker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(release_broker, "bridge", "not-the-password"):
            pass


@pytest.mark.parametrize(
    ("publisher", "subscriber", "topic", "allowed"),
    [
        ("bridge", "homeassistant", "hems/meter/grid", True),
        ("zigbee2mqtt", "homeassistant", "hems/meter/grid", False),  # only the bridge writes hems/
        ("zigbee2mqtt", "bridge", "zigbee2mqtt/plug", True),
        ("bridge", "zigbee2mqtt", "zigbee2mqtt/plug/set", False),  # the bridge only reads zigbee2mqtt/
        (DEVICE_A, "bridge", f"shelly/{DEVICE_A}/events/rpc", True),
        (DEVICE_A, "homeassistant", "homeassistant/sensor/x/config", False),  # devices cannot fake discovery
        # a device can neither fake another's readings nor command another's relay
        (DEVICE_A, "bridge", f"shelly/{DEVICE_B}/events/rpc", False),
        (DEVICE_A, DEVICE_B, f"shelly/{DEVICE_B}/rpc", False),
        ("bridge", DEVICE_B, f"shelly/{DEVICE_B}/rpc", True),
        # a device answers the bridge's RPC inside its own prefix (src <prefix>/replies/<client>)
        (DEVICE_B, "bridge", f"shelly/{DEVICE_B}/replies/meter-bridge-home-shelly-shelly/rpc", True),
        (DEVICE_B, DEVICE_A, f"shelly/{DEVICE_A}/replies/meter-bridge-home-shelly-shelly/rpc", False),
        ("shelly", "bridge", "shelly/em-1/events/rpc", None),  # the shared `shelly` user is gone
        # the bridge writes its own discovery (node_id `hems`) and nobody else's
        ("bridge", "homeassistant", "homeassistant/sensor/hems/hems_grid_power/config", True),
        ("bridge", "homeassistant", "homeassistant/sensor/hems_grid_power/config", False),
        ("homeassistant", "bridge", "homeassistant/status", True),
        ("bridge", DEVICE_A, "hems/meter/grid", False),  # devices cannot read the home's data
        ("bridge", DEVICE_A, f"shelly/{DEVICE_B}/rpc", False),  # nor another device's commands
        ("homeassistant", "zigbee2mqtt", "zigbee2mqtt/plug/set", True),
        ("healthcheck", "bridge", "hems/meter/grid", False),
    ],
)
async def test_acl(
    release_broker: ReleaseBroker, publisher: str, subscriber: str, topic: str, allowed: bool | None
) -> None:
    for device in (DEVICE_A, DEVICE_B):
        release_broker.add_shelly(device)
    subscription = topic.split("/")[0] + "/#"
    if allowed is None:  # no such user
        assert not release_broker.accepts(publisher, "any-password-at-all")
        return
    assert await release_broker.delivered(subscriber, publisher, topic, subscription) is allowed


def test_each_consumer_gets_only_its_own_credentials(release_broker: ReleaseBroker) -> None:
    share = release_broker.share
    assert sorted(p.name for p in (share / "bridge").iterdir()) == ["bridge", "password", "username"]
    assert sorted(p.name for p in (share / "homeassistant").iterdir()) == ["homeassistant", "password", "username"]
    assert sorted(p.name for p in (share / "zigbee2mqtt").iterdir()) == ["password", "username", "zigbee2mqtt"]
    for consumer in ("bridge", "homeassistant", "zigbee2mqtt"):
        assert (share / consumer / "username").read_text() == consumer
        assert (share / consumer / "password").read_text() == release_broker.password(consumer)
        assert oct((share / consumer / "password").stat().st_mode & 0o777) == "0o600"
    passwords = {release_broker.password(user) for user in USERS}
    assert len(passwords) == len(USERS), "every user has its own password"
    assert all(len(p) == 32 for p in passwords)


def test_rendered_config_is_secure(release_broker: ReleaseBroker) -> None:
    config = (release_broker.config / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in config
    assert "persistence true" in config
    passwd = (release_broker.config / "passwd").read_text()
    for user in USERS:
        assert release_broker.password(user) not in passwd, "passwords are stored hashed"


def test_healthcheck_script(release_broker: ReleaseBroker) -> None:
    env = release_broker.environment()
    result = subprocess.run(["sh", str(MOSQUITTO_DIR / "healthcheck.sh")], env=env, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr


async def test_zigbee2mqtt_base_topic_follows_the_variable(tmp_path: Path) -> None:
    """Z2M_BASE_TOPIC (the same variable the zigbee2mqtt service and the bridge read) moves Zigbee2MQTT's
    prefix in the ACL; a value that is not a plain prefix keeps the default."""
    broker = ReleaseBroker(tmp_path, env={"Z2M_BASE_TOPIC": "z2m/home"})
    broker.start()
    try:
        assert await broker.delivered("bridge", "zigbee2mqtt", "z2m/home/plug", "z2m/#") is True
        assert await broker.delivered("bridge", "zigbee2mqtt", "zigbee2mqtt/plug", "zigbee2mqtt/#") is False
    finally:
        broker.stop()
    broker.env = {"Z2M_BASE_TOPIC": "#"}
    broker.start()
    try:
        assert "Z2M_BASE_TOPIC '#' is not a plain topic prefix" in broker.log_text()
        assert await broker.delivered("bridge", "zigbee2mqtt", "zigbee2mqtt/plug", "zigbee2mqtt/#") is True
        assert await broker.delivered("bridge", "zigbee2mqtt", "shelly/x/events/rpc", "shelly/#") is False
    finally:
        broker.stop()


async def test_passwords_survive_restart_and_variables_override(tmp_path: Path) -> None:
    broker = ReleaseBroker(tmp_path)
    broker.start()
    first = broker.password("bridge")
    broker.stop()
    broker.start()
    try:
        assert broker.password("bridge") == first
        async with client(broker, "bridge", first):
            pass
    finally:
        broker.stop()

    broker.env = {"MQTT_BRIDGE_PASSWORD": "operator-chosen-secret"}
    broker.start()
    try:
        assert (broker.share / "bridge" / "password").read_text() == "operator-chosen-secret"
        async with client(broker, "bridge", "operator-chosen-secret"):
            pass
        with pytest.raises(aiomqtt.MqttError):
            async with client(broker, "bridge", first):
                pass
    finally:
        broker.stop()


@pytest.mark.parametrize("bad", ["tiny-pw", "has:colon-in-it"])
def test_unusable_password_variable_is_refused(tmp_path: Path, bad: str) -> None:
    broker = ReleaseBroker(tmp_path, env={"MQTT_ZIGBEE2MQTT_PASSWORD": bad})
    result = subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "entrypoint.sh")], env=broker.environment(), capture_output=True, timeout=30
    )
    assert result.returncode == 2
    assert b"zigbee2mqtt" in result.stderr
    assert bad.encode() not in result.stderr, "the refused secret is not echoed to the log"
    assert not (broker.config / "mosquitto.conf").exists()


# -- Shelly identities ------------------------------------------------------------------------------


async def test_shelly_identity_taken_in_while_running_and_kept_over_restart(tmp_path: Path) -> None:
    broker = ReleaseBroker(tmp_path)
    broker.start()
    try:
        assert broker.process is not None
        pid = broker.process.pid
        assert not broker.accepts(DEVICE_A, "not-yet-a-user-xyz")
        async with client(broker, "bridge") as bridge:
            await bridge.subscribe(f"shelly/{DEVICE_A}/#", qos=1)
            password = broker.add_shelly(DEVICE_A)  # the watcher re-renders and sends SIGHUP
            assert broker.process.pid == pid, "reloaded, not restarted"
            assert broker.process.poll() is None
            async with client(broker, DEVICE_A, password) as device:
                await device.publish(f"shelly/{DEVICE_A}/online", b"true", qos=1)
            # the bridge's connection made before the reload still works
            async with asyncio.timeout(5):
                message = await anext(aiter(bridge.messages))
            assert (str(message.topic), message.payload) == (f"shelly/{DEVICE_A}/online", b"true")
        assert "Shelly identities changed: 1 device user(s); reloading" in broker.log_text()
        passwd = (broker.config / "passwd").read_text()
        assert password not in passwd, "stored hashed"
    finally:
        broker.stop()
    broker.start()
    try:
        assert broker.accepts(DEVICE_A, password), "rendered at start from the identities volume"
    finally:
        broker.stop()


async def test_removed_identity_is_revoked_and_connection_dropped(tmp_path: Path) -> None:
    broker = ReleaseBroker(tmp_path)
    broker.start()
    try:
        password = broker.add_shelly(DEVICE_A)
        broker.add_shelly(DEVICE_B)

        async def read_until_dropped(device: aiomqtt.Client) -> None:
            async with asyncio.timeout(5):
                async for _ in device.messages:
                    pass

        async with client(broker, DEVICE_A, password) as device:
            (broker.identities / DEVICE_A).unlink()
            with pytest.raises(aiomqtt.MqttError):  # Mosquitto drops clients whose user is gone
                await read_until_dropped(device)
        assert not broker.accepts(DEVICE_A, password)
        assert broker.accepts(DEVICE_B, broker.password(DEVICE_B))
    finally:
        broker.stop()


def test_identity_files_that_are_not_shelly_devices_are_ignored(tmp_path: Path) -> None:
    broker = ReleaseBroker(tmp_path)
    planted = "Planted-password-0123456789"
    # a file named like a service user must not add or replace that user
    for name in ("bridge", "healthcheck", "shelly", "shellyplus1pm-nothex", "SHELLYPLUS1PM-A8032AB12345"):
        (broker.identities / name).write_text(planted)
    (broker.identities / DEVICE_B).write_text("short")
    (broker.identities / f".{DEVICE_A}.tmp").write_text(planted)
    broker.start()
    try:
        for user in ("bridge", "healthcheck", "shelly", DEVICE_B, DEVICE_A):
            assert not broker.accepts(user, planted)
        assert not broker.accepts(DEVICE_B, "short")
        assert broker.accepts("bridge", (broker.data / "secrets" / "bridge").read_text())
        log = broker.log_text()
        assert "ignoring" in log
        assert "not a Shelly device id" in log
        assert "the password is not 16-128 characters" in log
        assert planted not in log, "a refused secret is not echoed to the log"
        acl = (broker.config / "acl").read_text()
        assert "shelly/shelly/" not in acl
        assert "user shelly\n" not in acl
    finally:
        broker.stop()


def test_shared_shelly_password_variable_is_retired_with_a_note(tmp_path: Path) -> None:
    broker = ReleaseBroker(tmp_path, env={"MQTT_SHELLY_PASSWORD": "old-shared-password-123"})
    stale = broker.share / "bridge" / "shelly"
    stale.write_text("old-shared-password-123")
    broker.start()
    try:
        assert not broker.accepts("shelly", "old-shared-password-123")
        assert not stale.exists(), "the old shared password is not left lying in the bridge's volume"
        assert "MQTT_SHELLY_PASSWORD is no longer used" in broker.log_text()
        assert "old-shared-password-123" not in broker.log_text()
    finally:
        broker.stop()


def test_compose_shares_the_identities_volume_from_the_bridge_to_the_broker(compose: dict[str, Any]) -> None:
    """The paths both images use by default (mosquitto's ENV, the bridge's DEFAULT_IDENTITIES_DIR)."""
    broker_env = (MOSQUITTO_DIR / "Dockerfile").read_text()
    assert f"MQTT_SHELLY_IDENTITIES_DIR={DEFAULT_IDENTITIES_DIR}" in broker_env
    mounts = {
        name: [v for v in service.get("volumes", []) if v.startswith("shelly-identities:")]
        for name, service in compose["services"].items()
    }
    assert mounts.pop("mqtt") == [f"shelly-identities:{DEFAULT_IDENTITIES_DIR}:ro"], "the broker only reads it"
    assert mounts.pop("meter-bridge") == [f"shelly-identities:{DEFAULT_IDENTITIES_DIR}"]
    assert not any(mounts.values()), "no other service sees the devices' passwords"


def test_entrypoint_runs_on_busybox_alone(tmp_path: Path) -> None:
    """The image is Alpine-based: its shell and tools are busybox's. Here: Debian's busybox (the
    closest this machine has) with nothing else on PATH but the Mosquitto binaries."""
    busybox = shutil.which("busybox")
    assert busybox, "make setup installs busybox"
    tools = tmp_path / "bin"
    tools.mkdir()
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        (tools / applet).symlink_to(busybox)
    for binary in ("mosquitto", "mosquitto_passwd"):
        found = shutil.which(binary)
        assert found
        (tools / binary).symlink_to(found)
    broker = ReleaseBroker(tmp_path / "mqtt", interpreter=(busybox, "sh"))
    broker.env = {"PATH": str(tools), "MOSQUITTO_BIN": str(tools / "mosquitto")}
    broker.start()
    try:
        password = broker.add_shelly(DEVICE_A)  # rendered and reloaded by the watcher
        (broker.identities / DEVICE_A).unlink()
        deadline = time.monotonic() + 60  # a hang bound only
        while broker.accepts(DEVICE_A, password):
            assert time.monotonic() < deadline, broker.log_text()
            time.sleep(0.1)
        assert broker.accepts("bridge", broker.password("bridge"))
        assert "not found" not in broker.log_text(), "every tool the entrypoint uses is a busybox applet"
    finally:
        broker.stop()


DEVICES_PASSWORD = "tasmota-and-esphome-secret"


@pytest.mark.parametrize(
    ("publisher", "subscriber", "topic", "allowed"),
    [
        # what `type: mqtt` reads: Tasmota's default prefixes and `devices/` for the rest
        ("devices", "bridge", "tele/kettle/SENSOR", True),
        ("devices", "bridge", "tele/kettle/LWT", True),
        ("devices", "bridge", "stat/kettle/POWER", True),
        ("devices", "bridge", "devices/heatpump/state", True),
        ("devices", "bridge", "devices/laundry/sensor/dryer_power/state", True),
        ("homeassistant", "devices", "cmnd/kettle/POWER", False),  # HA does not command them here
        # they cannot fake the bridge's data, HA's discovery, a Shelly or a Zigbee device
        ("devices", "homeassistant", "hems/meter/grid", False),
        ("devices", "homeassistant", "homeassistant/sensor/hems/hems_grid_power/config", False),
        ("devices", "bridge", f"shelly/{DEVICE_A}/events/rpc", False),
        ("devices", "bridge", "zigbee2mqtt/plug", False),
        # nor read the home's data
        ("bridge", "devices", "hems/meter/grid", False),
    ],
)
async def test_generic_devices_user_when_its_password_is_set(
    tmp_path: Path, publisher: str, subscriber: str, topic: str, allowed: bool
) -> None:
    broker = ReleaseBroker(tmp_path, env={"MQTT_DEVICES_PASSWORD": DEVICES_PASSWORD})
    broker.start()
    try:
        subscription = topic.split("/")[0] + "/#"
        assert await broker.delivered(subscriber, publisher, topic, subscription) is allowed
    finally:
        broker.stop()


def test_no_devices_user_without_its_password(release_broker: ReleaseBroker) -> None:
    """Secure by default: no variable, no such user (a generated password would reach nobody)."""
    assert not release_broker.accepts("devices", DEVICES_PASSWORD)
    assert "user devices" not in (release_broker.config / "acl").read_text()


def test_the_broker_runs_as_the_images_mosquitto_user(release_broker: ReleaseBroker) -> None:
    """Started as root, the entrypoint hands the broker's files to the image's `mosquitto` (1883:1883,
    scripts/image-users.tsv) and Mosquitto drops to it: what a device runs."""
    user = image_users.require("mqtt")["mqtt"]
    assert release_broker.process is not None
    status = Path(f"/proc/{release_broker.process.pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    gids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Gid:"))
    assert set(uids) == {str(user.uid)}, status
    assert set(gids) == {str(user.gid)}, status
    for path in (release_broker.config, release_broker.data, release_broker.config / "passwd"):
        assert path.stat().st_uid == user.uid, path
