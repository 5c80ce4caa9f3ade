"""Flex's MQTT I/O: one supervised connection (`MqttSession`) for what flex hears and says.

In: community and manual events, Home Assistant's commands (`<base>/flex/+/set`,
`<base>/flex/asset/+/allow/set`) and MQTT actuators' device state. Out: the retained state
document every HEMS Flex entity reads (`<base>/flex/state`), and MQTT actuators' commands.
The entities themselves are described in `entities.py` and announced by the HA sink.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from ..asyncutil import stop_tasks
from ..errors import BridgeError, BrokerError, SinkError
from ..mqtt import MqttClient, endpoint
from ..mqttsession import MqttSession
from ..sections import MqttConfig
from ..stats import SinkStats
from .entities import FlexTopics

_LOGGER = logging.getLogger(__name__)


class FlexInbox(Protocol):
    """What the MQTT I/O hands messages to and takes the state from (the controller)."""

    stats: SinkStats

    def handle_event_message(self, topic: str, payload: bytes) -> object:
        """An event message (community or manual)."""

    async def handle_command(self, topic: str, payload: bytes) -> None:
        """A command from Home Assistant."""

    def state_body(self) -> bytes:
        """The state document as published."""


class FlexMqtt:
    """The flex controller's connection to the broker (see the module docstring)."""

    def __init__(self, config: MqttConfig, client_id: str, topics: FlexTopics) -> None:
        self._config = config
        self._client_id = client_id
        self.topics = topics
        self._inbox: FlexInbox | None = None
        self._client: MqttClient | None = None
        self._watchers: dict[str, list[Callable[[bytes], None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._wake = asyncio.Event()
        self._dirty = True
        self._published: bytes | None = None

    def attach(self, inbox: FlexInbox) -> None:
        """Hand messages to `inbox` and publish its state (before `start`)."""
        self._inbox = inbox
        inbox.stats.connected = False

    def watch(self, topic: str, callback: Callable[[bytes], None]) -> None:
        """Subscribe to `topic` and call `callback(payload)` with every message (device state)."""
        self._watchers.setdefault(topic, []).append(callback)

    async def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish at QoS 1 now; `SinkError` while not connected or when the publish fails."""
        client = self._client
        if client is None:
            raise SinkError(f"MQTT broker {endpoint(self._config)} not connected")
        try:
            await client.publish(topic, payload, qos=1, retain=retain)
        except BrokerError as err:
            raise SinkError(f"publish to {topic} failed: {err}") from err

    def state_changed(self, changed: bool) -> None:
        """Publish the state again if `changed`, or if it reads differently from what was published.

        Status and achieved reduction change with time and readings, not only with actions.
        """
        if self._inbox is None:
            return
        if changed or self._dirty or self._inbox.state_body() != self._published:
            self._dirty = True
            self._wake.set()

    async def start(self) -> None:
        """Connect (in the background; reconnects by itself)."""
        self._task = asyncio.create_task(self._connection_loop(), name="flex-mqtt")

    async def close(self) -> None:
        """Disconnect."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await stop_tasks([self._task])

    async def _connection_loop(self) -> None:
        inbox = self._inbox
        if inbox is None:
            raise RuntimeError("FlexMqtt.attach was not called")
        session = MqttSession(self._config, self._client_id, name="Flex")

        def down(error: BridgeError) -> None:
            inbox.stats.connected = False
            inbox.stats.errors["mqtt"] += 1

        async def body(client: MqttClient) -> None:
            self._client = client
            try:
                await self._run_session(client, inbox)
            finally:
                self._client = None

        await session.run(body, on_down=down, closing=lambda: self._closing)

    async def _run_session(self, client: MqttClient, inbox: FlexInbox) -> None:
        topics = self.topics
        for topic in (topics.event, topics.manual, *topics.command_filters, *self._watchers):
            await client.subscribe(topic, qos=1)
        # connected = listening: an event or command sent from now on is heard (a test, or
        # `meter-bridge status`, that sees it earlier could publish into the gap)
        inbox.stats.connected = True
        self._dirty = True
        self._wake.set()
        publisher = asyncio.create_task(self._publish_loop(client, inbox), name="flex-publish")
        try:
            async for message in client.messages:
                await self._on_message(inbox, message.topic, message.payload)
        finally:
            await stop_tasks([publisher])

    async def _on_message(self, inbox: FlexInbox, topic: str, payload: bytes) -> None:
        if topic in (self.topics.event, self.topics.manual):
            inbox.handle_event_message(topic, payload)
        elif topic.startswith(f"{self.topics.base}/flex/") and topic.endswith("/set"):
            await inbox.handle_command(topic, payload)
        for callback in self._watchers.get(topic, ()):
            callback(payload)

    async def _publish_loop(self, client: MqttClient, inbox: FlexInbox) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self._dirty:
                self._dirty = False
                body = inbox.state_body()
                await client.publish(self.topics.state, body, qos=1, retain=True)
                self._published = body
