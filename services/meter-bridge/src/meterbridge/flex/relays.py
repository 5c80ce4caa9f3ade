"""Actuator I/O: the actuators of the configured assets, and the Shelly RPC session they share.

Shelly relays are switched over one MQTT RPC session of flex's own (`ShellyRelays`), reopened by
`MqttSession` when it drops; the relay API is the Shelly source's
(`meterbridge.sources.shelly.relay`). MQTT actuators publish through flex's MQTT connection
(`FlexMqtt.publish`) and learn their device's state from it (`FlexMqtt.watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from ..errors import BridgeError, SinkError
from ..mqtt import MqttClient
from ..mqttsession import MqttSession
from ..sections import MqttContext
from ..sources.shelly.relay import ShellyMqttRpc, ShellyRelay, rpc_on
from .actuators import Actuator, HomeAssistantActuator, MqttActuator, Publish, ShellyActuator
from .assets import AssetConfig, HomeAssistantActuatorConfig, MqttActuatorConfig, ShellyActuatorConfig

#: How long a command waits for the Shelly RPC session to (re)connect before it fails.
CONNECT_WAIT_S = 5.0


class ShellyRelays:
    """Shelly relays over one MQTT RPC session, reopened when it drops."""

    def __init__(self, config: MqttContext) -> None:
        self._config = config
        self.rpc: ShellyMqttRpc | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Open the session (in the background: commands wait for it up to `CONNECT_WAIT_S`)."""
        self._task = asyncio.create_task(self._run(), name="flex-shelly-rpc")

    async def _run(self) -> None:
        client_id = f"{self._config.client_id}-flex-rpc"
        session = MqttSession(self._config.mqtt, client_id, name="Flex Shelly RPC")

        async def body(client: MqttClient) -> None:
            async with rpc_on(client, client_id) as rpc:
                self.rpc = rpc
                self._ready.set()
                if rpc.replies is not None:
                    await rpc.replies  # raises BrokerError when the connection is lost: reconnect

        def down(error: BridgeError) -> None:
            self._ready.clear()
            self.rpc = None

        await session.run(body, on_down=down)

    async def current(self, prefix: str, channel: int) -> ShellyRelay:
        """Channel `channel` of the device at `prefix` on the current session; `SinkError` while there is none."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_WAIT_S):
                await self._ready.wait()
        if self.rpc is None:
            raise SinkError("Shelly RPC session not connected")
        return ShellyRelay(self.rpc, prefix, channel)

    def relay(self, prefix: str, channel: int) -> SessionRelay:
        """A relay bound to whatever session is current when it is used."""
        return SessionRelay(self, prefix, channel)

    async def close(self) -> None:
        """Close the session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class SessionRelay:
    """One Shelly relay channel, switched over the session current at each command (`RelayLike`)."""

    def __init__(self, relays: ShellyRelays, prefix: str, channel: int) -> None:
        self._relays = relays
        self.prefix = prefix
        self.channel = channel

    async def set(self, on: bool, toggle_after_s: float | None = None, timeout_s: float | None = None) -> bool:
        """`Switch.Set`; the device flips back after `toggle_after_s`."""
        relay = await self._relays.current(self.prefix, self.channel)
        return bool(await relay.set(on, toggle_after_s=toggle_after_s, timeout_s=timeout_s))

    async def is_on(self, timeout_s: float | None = None) -> bool:
        """The relay's output."""
        relay = await self._relays.current(self.prefix, self.channel)
        return bool(await relay.is_on(timeout_s=timeout_s))


class StateFeed(Protocol):
    """Where an MQTT actuator's device state comes from (`FlexMqtt.watch`)."""

    def watch(self, topic: str, callback: OnState) -> None:
        """Call `callback(payload)` with every message on `topic`."""


class OnState(Protocol):
    def __call__(self, payload: bytes) -> None: ...


def build_actuators(
    assets: Sequence[AssetConfig], shelly: ShellyRelays, publish: Publish, feed: StateFeed
) -> dict[str, Actuator]:
    """One actuator per asset, by asset id."""
    actuators: dict[str, Actuator] = {}
    for asset in assets:
        config = asset.actuator
        if isinstance(config, ShellyActuatorConfig):
            actuators[asset.id] = ShellyActuator(shelly.relay(config.prefix, config.channel))
        elif isinstance(config, HomeAssistantActuatorConfig):
            actuators[asset.id] = HomeAssistantActuator(config)
        elif isinstance(config, MqttActuatorConfig):
            actuator = MqttActuator(config, publish)
            if config.state_topic:
                feed.watch(config.state_topic, actuator.on_state_message)
            actuators[asset.id] = actuator
        else:  # pragma: no cover - the union is closed
            raise TypeError(type(config).__name__)
    return actuators


def uses_shelly(assets: Sequence[AssetConfig]) -> bool:
    """Whether any asset is a Shelly relay (the RPC session is only opened then)."""
    return any(isinstance(asset.actuator, ShellyActuatorConfig) for asset in assets)
