"""The mqtt service's entrypoint, run natively: users, ACL, config, and a real Mosquitto that
refuses anonymous clients and topics outside each user's ACL (asserted on the subscriber)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiomqtt
import pytest

from helpers.release import MOSQUITTO_DIR, ReleaseBroker

USERS = ("bridge", "homeassistant", "zigbee2mqtt", "shelly", "healthcheck")


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
        ("shelly", "bridge", "shelly/em-1/events/rpc", True),
        ("shelly", "homeassistant", "homeassistant/sensor/x/config", False),  # devices cannot fake discovery
        # the bridge writes its own discovery (node_id `hems`) and nobody else's
        ("bridge", "homeassistant", "homeassistant/sensor/hems/hems_grid_power/config", True),
        ("bridge", "homeassistant", "homeassistant/sensor/hems_grid_power/config", False),
        ("homeassistant", "bridge", "homeassistant/status", True),
        ("bridge", "shelly", "hems/meter/grid", False),  # devices cannot read the home's data
        ("homeassistant", "zigbee2mqtt", "zigbee2mqtt/plug/set", True),
        ("healthcheck", "bridge", "hems/meter/grid", False),
    ],
)
async def test_acl(release_broker: ReleaseBroker, publisher: str, subscriber: str, topic: str, allowed: bool) -> None:
    subscription = topic.split("/")[0] + "/#"
    assert await release_broker.delivered(subscriber, publisher, topic, subscription) is allowed


def test_each_consumer_gets_only_its_own_credentials(release_broker: ReleaseBroker) -> None:
    share = release_broker.share
    assert sorted(p.name for p in (share / "bridge").iterdir()) == ["bridge", "password", "shelly", "username"]
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
    config = (release_broker.root / "config" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in config
    assert "persistence true" in config
    passwd = (release_broker.root / "config" / "passwd").read_text()
    for user in USERS:
        assert release_broker.password(user) not in passwd, "passwords are stored hashed"


def test_healthcheck_script(release_broker: ReleaseBroker) -> None:
    env = release_broker.environment()
    result = subprocess.run(["sh", str(MOSQUITTO_DIR / "healthcheck.sh")], env=env, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr


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
    broker = ReleaseBroker(tmp_path, env={"MQTT_SHELLY_PASSWORD": bad})
    result = subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "entrypoint.sh")], env=broker.environment(), capture_output=True, timeout=30
    )
    assert result.returncode == 2
    assert b"shelly" in result.stderr
    assert bad.encode() not in result.stderr, "the refused secret is not echoed to the log"
    assert not (tmp_path / "config" / "mosquitto.conf").exists()
