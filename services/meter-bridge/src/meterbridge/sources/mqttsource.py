"""The thin transport shared by sources that read meters from MQTT topics (zigbee2mqtt, glow).

One MQTT connection per source (its own client id) in a supervised `MqttSession`, which
reconnects with jittered backoff and logs once when the broker goes away and once when it is
back. Subclasses subscribe in `on_connect` and handle each message in `on_message`; parsing
stays in their pure parsers.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import TypeVar

from ..configbase import SourceConfigBase
from ..errors import AuthError, BridgeError
from ..mqtt import MqttClient
from ..mqttsession import MqttSession
from ..sections import MqttConfig
from . import Source, SourceContext

ConfigT = TypeVar("ConfigT", bound=SourceConfigBase)


class MqttSubscriptionSource(Source[ConfigT]):
    """A source fed by MQTT subscriptions on the bridge's broker."""

    def __init__(self, config: ConfigT, mqtt: MqttConfig, client_id: str) -> None:
        super().__init__(config)
        self.mqtt = mqtt
        self.client_id = client_id

    @abstractmethod
    async def on_connect(self, client: MqttClient, ctx: SourceContext) -> None:
        """Subscribe to what the source reads (called after every (re)connect)."""

    @abstractmethod
    async def on_message(self, client: MqttClient, topic: str, payload: bytes, ctx: SourceContext) -> None:
        """Handle one message; must not raise on bad input (count it with `ctx.error`)."""

    async def run(self, ctx: SourceContext) -> None:
        """Read until cancelled, reconnecting to the broker with backoff (`MqttSession`)."""
        session = MqttSession(
            self.mqtt,
            self.client_id,
            name=f"source {self.id}",
            logger=logging.getLogger(f"meterbridge.sources.{self.id}"),
        )

        async def body(client: MqttClient) -> None:
            await self.on_connect(client, ctx)
            async for message in client.messages:
                await self.on_message(client, message.topic, message.payload, ctx)

        async def down(error: BridgeError) -> None:
            ctx.stats.errors["auth" if isinstance(error, AuthError) else "mqtt"] += 1
            await self.on_disconnect(ctx)

        await session.run(body, on_down=down)

    async def on_disconnect(self, ctx: SourceContext) -> None:
        """Called after the connection was lost; nothing by default."""
