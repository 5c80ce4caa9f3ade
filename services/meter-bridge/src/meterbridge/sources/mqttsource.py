"""The thin transport shared by sources that read meters from MQTT topics (zigbee2mqtt, glow).

One aiomqtt client per source (its own client id), reconnects with jittered backoff,
logs once when the broker goes away and once when it is back. Subclasses subscribe in
`on_connect` and handle each message in `on_message`; parsing stays in their pure
parsers.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from typing import TypeVar

import aiomqtt

from ..backoff import Backoff
from ..configbase import SourceConfigBase
from ..model import Reading
from ..mqtt import endpoint, make_client
from ..sections import MqttConfig
from . import Source, SourceContext
from .totals import TotalVerdict

ConfigT = TypeVar("ConfigT", bound=SourceConfigBase)

#: MQTT 3.1.1 CONNACK codes 4 and 5: bad user name or password, not authorised.
_AUTH_REFUSED = {4, 5}


def payload_bytes(message: aiomqtt.Message) -> bytes:
    """The payload of a message as bytes, whatever type aiomqtt decoded it to."""
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


class MqttSubscriptionSource(Source[ConfigT]):
    """A source fed by MQTT subscriptions on the bridge's broker."""

    def __init__(self, config: ConfigT, mqtt: MqttConfig, client_id: str) -> None:
        super().__init__(config)
        self.mqtt = mqtt
        self.client_id = client_id

    @abstractmethod
    async def on_connect(self, client: aiomqtt.Client, ctx: SourceContext) -> None:
        """Subscribe to what the source reads (called after every (re)connect)."""

    @abstractmethod
    async def on_message(self, client: aiomqtt.Client, topic: str, payload: bytes, ctx: SourceContext) -> None:
        """Handle one message; must not raise on bad input (count it with `ctx.error`)."""

    async def run(self, ctx: SourceContext) -> None:
        """Read until cancelled, reconnecting to the broker with backoff."""
        backoff = Backoff(initial=1.0, maximum=30.0)
        failures = 0
        while True:
            try:
                async with make_client(self.mqtt, self.client_id) as client:
                    if failures:
                        ctx.log.log(logging.INFO, "mqtt", "Connected to MQTT broker %s again", endpoint(self.mqtt))
                    failures = 0
                    backoff.reset()
                    await self.on_connect(client, ctx)
                    async for message in client.messages:
                        await self.on_message(client, str(message.topic), payload_bytes(message), ctx)
            except aiomqtt.MqttError as err:
                failures += 1
                refused = isinstance(err, aiomqtt.MqttCodeError) and _rc_value(err.rc) in _AUTH_REFUSED
                if refused:
                    ctx.error(
                        "auth", "MQTT broker %s refused user %r: %s", endpoint(self.mqtt), self.mqtt.username, err
                    )
                elif failures == 1:
                    ctx.error("mqtt", "MQTT broker %s unavailable: %s; retrying", endpoint(self.mqtt), err)
                else:
                    ctx.stats.errors["mqtt"] += 1
                    ctx.log.log(logging.DEBUG, "mqtt-retry", "MQTT connect attempt %d failed: %s", failures, err)
                await self.on_disconnect(ctx)
                await asyncio.sleep(backoff.maximum if refused else backoff.next_delay())

    async def on_disconnect(self, ctx: SourceContext) -> None:
        """Called after the connection was lost; nothing by default."""


def _rc_value(rc: object) -> int | None:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


def report_totals(ctx: SourceContext, label: str, notes: list[tuple[Reading, TotalVerdict]]) -> None:
    """Count and log what a `TotalGuard` held back or accepted as a reset (`label` names the meter)."""
    for reading, verdict in notes:
        quantity, value = reading.quantity.value, reading.value
        if verdict is TotalVerdict.RESET:
            ctx.error("total_reset", "%s: %s fell to %s: accepted as a meter reset", label, quantity, value)
        elif verdict is TotalVerdict.RESET_PENDING:
            ctx.error(
                "total_drop", "%s: %s fell to %s: held until confirmed", label, quantity, value, level=logging.INFO
            )
        else:
            ctx.error(
                "total_step_back", "%s: %s stepped back to %s: ignored", label, quantity, value, level=logging.DEBUG
            )
