"""How an asset is switched: one small class per way, behind the `Actuator` protocol.

Every actuator raises `SinkError` when a command could not be delivered; the controller
logs it, counts it and tries again on the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from ..errors import BridgeError, SinkError
from .assets import HomeAssistantActuatorConfig, MqttActuatorConfig

#: A service call that takes longer than this has failed (HA or the device is stuck).
CALL_TIMEOUT_S = 10.0


class Actuator(Protocol):
    """Switches one asset."""

    #: Whether `set` arms a device-side fail-safe (the device flips back by itself).
    has_fail_safe: bool

    async def set(self, on: bool, fail_safe_s: float | None) -> None:
        """Switch on/off; with `fail_safe_s` the device reverts by itself after that long (if it can)."""

    async def state(self) -> bool | None:
        """Whether it is on (None: unknown)."""


class RelayLike(Protocol):
    """What `ShellyActuator` needs of `meterbridge.sources.shelly.relay.ShellyRelay`."""

    async def set(self, on: bool, toggle_after_s: float | None = None, timeout_s: float | None = None) -> bool:
        """Switch; the device flips back after `toggle_after_s`."""

    async def is_on(self, timeout_s: float | None = None) -> bool:
        """The relay's output."""


class ShellyActuator:
    """A Shelly relay channel: `Switch.Set` with `toggle_after` as the fail-safe."""

    has_fail_safe = True

    def __init__(self, relay: RelayLike) -> None:
        self._relay = relay

    async def set(self, on: bool, fail_safe_s: float | None) -> None:
        """Switch the relay; the device reverts after `fail_safe_s` even if the bridge is gone."""
        try:
            await self._relay.set(on, toggle_after_s=fail_safe_s)
        except BridgeError as err:
            raise SinkError(f"Shelly relay: {err}") from err

    async def state(self) -> bool | None:
        """The relay's output (`Switch.GetStatus`); None when the device does not answer."""
        try:
            return await self._relay.is_on()
        except BridgeError:
            return None


Publish = Callable[[str, bytes, bool], Awaitable[None]]


class MqttActuator:
    """A device with an MQTT command topic. The fail-safe, if any, is the device's own."""

    has_fail_safe = False

    def __init__(self, config: MqttActuatorConfig, publish: Publish) -> None:
        self.config = config
        self._publish = publish
        self._state: bool | None = None

    async def set(self, on: bool, fail_safe_s: float | None) -> None:
        """Publish the command (QoS 1); `fail_safe_s` cannot be passed on (documented)."""
        payload = self.config.payload_on if on else self.config.payload_off
        await self._publish(self.config.command_topic, payload.encode(), self.config.retain)

    def on_state_message(self, payload: bytes) -> None:
        """Feed what the device reported on `state_topic`."""
        text = payload.decode(errors="replace").strip()
        if text == self.config.payload_on:
            self._state = True
        elif text == self.config.payload_off:
            self._state = False

    async def state(self) -> bool | None:
        """The last state the device reported (None: none yet, or no state topic)."""
        return self._state


class HomeAssistantActuator:
    """A Home Assistant entity, switched with `homeassistant.turn_on/turn_off` over HA's websocket."""

    has_fail_safe = False

    def __init__(self, config: HomeAssistantActuatorConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is not None and not self._ws.closed:
            return self._ws
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(self.config.url, heartbeat=30)
        hello = await ws.receive_json()
        if hello.get("type") != "auth_required":
            raise SinkError(f"{self.config.url}: unexpected greeting {hello.get('type')!r}")
        await ws.send_json({"type": "auth", "access_token": self.config.token.get_secret_value()})
        answer = await ws.receive_json()
        if answer.get("type") != "auth_ok":
            await ws.close()
            raise SinkError(f"{self.config.url}: authentication failed ({answer.get('type')})")
        self._ws = ws
        self._ids = itertools.count(1)
        return ws

    async def _call(self, message: dict[str, Any]) -> Any:
        async with self._lock:
            try:
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    ws = await self._connect()
                    msg_id = next(self._ids)
                    await ws.send_json({"id": msg_id, **message})
                    while True:
                        answer = await ws.receive_json()
                        if answer.get("id") == msg_id and answer.get("type") == "result":
                            break
            except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as err:
                await self.close()
                raise SinkError(f"{self.config.url}: {message.get('type')} failed: {err!r}") from err
            if not answer.get("success"):
                raise SinkError(f"{self.config.url}: {message.get('type')} refused: {answer.get('error')}")
            return answer.get("result")

    async def set(self, on: bool, fail_safe_s: float | None) -> None:
        """Call `homeassistant.turn_on/off` on the entity; HA offers no fail-safe."""
        await self._call(
            {
                "type": "call_service",
                "domain": "homeassistant",
                "service": "turn_on" if on else "turn_off",
                "target": {"entity_id": self.config.entity_id},
            }
        )

    async def state(self) -> bool | None:
        """The entity's state (`on`/`off`; None for anything else)."""
        try:
            states = await self._call({"type": "get_states"})
        except SinkError:
            return None
        for entity in states or []:
            if entity.get("entity_id") == self.config.entity_id:
                return {"on": True, "off": False}.get(entity.get("state"))
        return None

    async def close(self) -> None:
        """Close the websocket and session."""
        ws, session = self._ws, self._session
        self._ws, self._session = None, None
        with contextlib.suppress(Exception):
            if ws is not None:
                await ws.close()
            if session is not None:
                await session.close()
