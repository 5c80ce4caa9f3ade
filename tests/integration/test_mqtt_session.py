"""The one supervised MQTT session (`meterbridge.mqttsession`) against a real Mosquitto with auth.

Stopping the broker logs "unavailable" once (further attempts at DEBUG), bringing it back logs
"again" once and runs the session body again (so it subscribes again); refused credentials
become our `AuthError`, anything else our `SourceConnectionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from helpers.mosquitto import Mosquitto
from meterbridge.config import BridgeConfig
from meterbridge.errors import AuthError, BridgeError, SourceConnectionError
from meterbridge.flex.relays import ShellyRelays
from meterbridge.mqtt import MqttClient
from meterbridge.mqttsession import MqttSession
from meterbridge.sections import MqttConfig


async def _until(predicate: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_down_and_back_logged_once_and_the_body_runs_again(
    own_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    config = MqttConfig.model_validate(own_broker.bridge_mqtt("session"))
    session = MqttSession(config, "session-test", name="test", initial_s=0.1, maximum_s=0.3)
    bodies: list[MqttClient] = []
    errors: list[BridgeError] = []

    async def body(client: MqttClient) -> None:
        bodies.append(client)
        await client.subscribe("session/#")
        async for _ in client.messages:
            pass

    caplog.set_level(logging.DEBUG, logger="meterbridge.mqttsession")
    task = asyncio.create_task(session.run(body, on_down=errors.append))
    try:
        await _until(lambda: len(bodies) == 1, 10)
        own_broker.stop()
        await _until(lambda: len(errors) >= 4, 15)  # several failed attempts while it is down
        own_broker.start()
        await _until(lambda: len(bodies) == 2, 15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(isinstance(e, SourceConnectionError) for e in errors)
    assert all(f"{config.host}:{config.port}" in str(e) for e in errors)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    again = [r for r in caplog.records if r.levelno == logging.INFO and "again" in r.getMessage()]
    assert len(again) == 1


async def test_refused_credentials_are_an_auth_error(broker: Mosquitto) -> None:
    data = broker.bridge_mqtt("session_auth")
    config = MqttConfig.model_validate({**data, "password": "wrong"})
    session = MqttSession(config, "session-auth", name="test", initial_s=0.1, maximum_s=0.2)
    errors: list[BridgeError] = []

    async def body(client: MqttClient) -> None:  # pragma: no cover - never connects
        raise AssertionError("connected with a wrong password")

    task = asyncio.create_task(session.run(body, on_down=errors.append))
    try:
        await _until(lambda: len(errors) >= 1, 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert isinstance(errors[0], AuthError)
    assert "refused user 'bridge'" in str(errors[0])


async def test_flex_shelly_rpc_session_comes_back_after_a_broker_restart(own_broker: Mosquitto) -> None:
    """Regression: the flex controller's Shelly RPC session used to stay dead after the broker went away."""
    config = BridgeConfig.model_validate({"mqtt": own_broker.bridge_mqtt("flex_rpc")})
    relays = ShellyRelays(config.mqtt_context)
    await relays.start()
    try:
        await _until(lambda: relays.rpc is not None, 10)
        first = relays.rpc
        own_broker.restart()
        await _until(lambda: relays.rpc is not None and relays.rpc is not first, 20)
    finally:
        await relays.close()
