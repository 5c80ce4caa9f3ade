"""Shelly RPC over MQTT and relay control (`Switch.Set`) for demand response.

A request is published to `<prefix>/rpc` as `{"id", "src", "method", "params"}`; the
device answers on `<src>/rpc` with the same `id` (Shelly Gen2 API, "RPC over MQTT"; `src` is
any string the caller chooses). Our `src` is `<prefix>/replies/<name>`, so each device answers
inside its own prefix: the broker confines a device to `shelly/<device id>/#`, and a reply
can only come from the device that was asked. `ShellyMqttRpc` numbers requests, subscribes
to a device's reply topic before the first request to it, and matches replies to requests;
whoever owns the MQTT client passes it every message (`owns(topic)` tells which are replies).

`ShellyRelay.set(False, toggle_after_s=...)` is the fail-safe for demand response: the
device itself turns the relay back on after `toggle_after_s`, so a heater switched off
for an event comes back even if the bridge dies; the caller re-arms it while the event lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from typing import Any

from ...asyncutil import stop_tasks
from ...errors import BridgeError, BrokerError, ParseError, SourceConnectionError, SourceTimeoutError
from ...mqtt import MqttClient, make_client
from ...sections import MqttConfig
from .parser import decode_frame


class ShellyRpcError(BridgeError):
    """The device answered an RPC with an error (`code`, `message` as Shelly sent them)."""

    def __init__(self, prefix: str, method: str, code: int, message: str) -> None:
        super().__init__(f"{prefix}: {method} failed: {message} (code {code})")
        self.code = code
        self.message = message


class ShellyMqttRpc:
    """Calls RPC methods of Shelly devices over one MQTT client and correlates replies.

    `name` must be a single topic level; the replies of the device at `prefix` arrive on
    `reply_topic(prefix)` (`<prefix>/replies/<name>/rpc`), which `call` subscribes to. The
    owner of `client` passes each message whose topic `owns` to `handle_reply`.
    """

    def __init__(self, client: MqttClient, name: str, timeout_s: float = 10.0) -> None:
        if not name or any(c in name for c in "/+#"):
            raise ValueError(f"RPC src name must be one topic level, not {name!r}")
        self._client = client
        self.name = name
        self.timeout_s = timeout_s
        self._pending: dict[int, tuple[str, str, asyncio.Future[Any]]] = {}
        self._reply_topics: dict[str, str] = {}  # reply topic -> prefix, once subscribed
        self._subscribing = asyncio.Lock()
        #: The task feeding replies in (`rpc_on`); it ends with `BrokerError` when the connection is lost.
        self.replies: asyncio.Task[None] | None = None
        # A random start: a restarted bridge never takes a late reply for a new request.
        self._ids = itertools.count(random.randrange(1, 1 << 30))  # noqa: S311 - not crypto

    def src(self, prefix: str) -> str:
        """The `src` of requests to the device at `prefix`."""
        return f"{prefix}/replies/{self.name}"

    def reply_topic(self, prefix: str) -> str:
        """Where the device at `prefix` answers."""
        return f"{self.src(prefix)}/rpc"

    def owns(self, topic: str) -> bool:
        """Whether `topic` is the reply topic of a device this caller has asked."""
        return topic in self._reply_topics

    async def _subscribe_replies(self, prefix: str) -> None:
        topic = self.reply_topic(prefix)
        if topic in self._reply_topics:
            return
        async with self._subscribing:
            if topic not in self._reply_topics:
                await self._client.subscribe(topic, qos=1)
                self._reply_topics[topic] = prefix

    async def call(
        self, prefix: str, method: str, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> Any:
        """Call `method` on the device at `prefix`; its `result`.

        Raises `SourceTimeoutError` when no reply comes within the timeout,
        `ShellyRpcError` when the device reports an error and `SourceConnectionError`
        when the broker connection fails.
        """
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (prefix, method, future)
        request: dict[str, Any] = {"id": request_id, "src": self.src(prefix), "method": method}
        if params is not None:
            request["params"] = params
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            await self._subscribe_replies(prefix)
            await self._client.publish(f"{prefix}/rpc", json.dumps(request).encode(), qos=1)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as err:
            raise SourceTimeoutError(f"{prefix}: no reply to {method} within {timeout:g} s") from err
        except BrokerError as err:
            raise SourceConnectionError(f"{prefix}: {method} not sent: {err}") from err
        finally:
            self._pending.pop(request_id, None)

    def handle_reply(self, topic: str, payload: bytes) -> None:
        """Resolve the request a reply on `topic` answers; raises `ParseError` on garbage.

        Replies to no pending request (late, or another bridge's), and replies on another
        device's topic than the one asked, are dropped.
        """
        frame = decode_frame(payload)
        if frame.kind != "reply" or frame.request_id is None:
            raise ParseError(f"expected an RPC reply on {topic}, got {frame.kind}")
        pending = self._pending.get(frame.request_id)
        if pending is None or pending[2].done() or self._reply_topics.get(topic) != pending[0]:
            return
        prefix, method, future = pending
        if frame.error is not None:
            future.set_exception(ShellyRpcError(prefix, method, frame.error["code"], frame.error["message"]))
        else:
            future.set_result(frame.result)

    def fail_all(self, error: BaseException) -> None:
        """Fail every pending call (the connection is gone)."""
        for _, _, future in self._pending.values():
            if not future.done():
                future.set_exception(error)


async def _pump_replies(client: MqttClient, rpc: ShellyMqttRpc) -> None:
    async for message in client.messages:
        topic = message.topic
        if rpc.owns(topic):
            with contextlib.suppress(ParseError):
                rpc.handle_reply(topic, message.payload)


@contextlib.asynccontextmanager
async def rpc_on(client: MqttClient, client_id: str, timeout_s: float = 10.0) -> AsyncIterator[ShellyMqttRpc]:
    """`async with rpc_on(client, client_id) as rpc:` an RPC caller on a connected client.

    Pumps replies (`call` subscribes to each device's reply topic) until the block ends; then
    fails every call still waiting.
    """
    rpc = ShellyMqttRpc(client, client_id, timeout_s)
    task = rpc.replies = asyncio.create_task(_pump_replies(client, rpc), name=f"shelly-rpc-{client_id}")
    try:
        yield rpc
    finally:
        await stop_tasks([task])
        rpc.fail_all(SourceConnectionError(f"{client_id}: RPC session closed"))


@contextlib.asynccontextmanager
async def shelly_rpc_session(mqtt: MqttConfig, client_id: str, timeout_s: float = 10.0) -> AsyncIterator[ShellyMqttRpc]:
    """`async with shelly_rpc_session(cfg.mqtt, "flex-relays") as rpc:` an RPC caller with its own client.

    Raises `SourceConnectionError` when the broker cannot be reached.
    """
    async with make_client(mqtt, client_id) as client, rpc_on(client, client_id, timeout_s) as rpc:
        yield rpc


class ShellyRelay:
    """One relay channel (`switch:<channel>`) of the device at `prefix`."""

    def __init__(self, rpc: ShellyMqttRpc, prefix: str, channel: int = 0) -> None:
        self.rpc = rpc
        self.prefix = prefix
        self.channel = channel

    async def set(self, on: bool, toggle_after_s: float | None = None, timeout_s: float | None = None) -> bool:
        """Switch the relay `on`/off; the device flips it back after `toggle_after_s` (fail-safe).

        Returns whether it was on before. Raises `SourceTimeoutError`, `ShellyRpcError`,
        `SourceConnectionError` (see `ShellyMqttRpc.call`) and `ValueError` for a
        `toggle_after_s` that is not positive.
        """
        params: dict[str, Any] = {"id": self.channel, "on": on}
        if toggle_after_s is not None:
            if not toggle_after_s > 0:
                raise ValueError(f"toggle_after_s must be positive, not {toggle_after_s}")
            params["toggle_after"] = toggle_after_s
        result = await self.rpc.call(self.prefix, "Switch.Set", params, timeout_s)
        return bool(result.get("was_on")) if isinstance(result, dict) else False

    async def is_on(self, timeout_s: float | None = None) -> bool:
        """The relay's current state (`Switch.GetStatus`); raises like `set`."""
        result = await self.rpc.call(self.prefix, "Switch.GetStatus", {"id": self.channel}, timeout_s)
        if not isinstance(result, dict) or not isinstance(result.get("output"), bool):
            raise ParseError(f"{self.prefix}: Switch.GetStatus has no `output`")
        return bool(result["output"])
