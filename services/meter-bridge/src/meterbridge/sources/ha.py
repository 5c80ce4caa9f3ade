"""`type: ha`: Home Assistant entities as power meters, over HA's websocket API.

Each configured entity becomes a meter with one quantity, `power` (W, import positive).
The entity's state, or one of its attributes (a dimmer's `brightness`, or a nested one by
a dotted path), is mapped to watts linearly or by a table (piecewise linear), as SenseLink
does. A state in `off_states` (default `off`) reports `off_w`, one in `on_states` reports
`on_w` (a switch with a known load: SenseLink's `on_state_value` and `max_watts`); the
on/off state may come from an attribute (`state_attribute`). Other states that are not
numbers (`unavailable`, `unknown`) mark the meter unavailable.

`HaEntityParser` is pure: it takes the events of HA's `subscribe_entities` command
(compressed states: `a` added/full, `c` changes with `+`/`-`, `r` removed) and returns
readings. The transport authenticates with a long-lived token (`${HA_TOKEN}`),
subscribes, and reconnects with backoff; a refused token raises `AuthError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp

from ..backoff import Backoff
from ..errors import AuthError, ParseError, SourceConnectionError
from ..model import MeterDescription, Quantity, Reading, utc_now
from . import Source, SourceContext
from .ha_config import HaEntityConfig, HaSourceConfig

_LOGGER = logging.getLogger(__name__)


class HaEntityParser:
    """Pure: `subscribe_entities` events in, readings and availability changes out."""

    def __init__(self, entities: list[HaEntityConfig]) -> None:
        self._entities = {entity.entity_id: entity for entity in entities}
        self._states: dict[str, dict[str, Any]] = {}

    def feed(self, event: Mapping[str, Any], ts: datetime) -> tuple[list[Reading], dict[str, bool]]:
        """Apply one event; return readings and `{meter: available}` of the entities it touched.

        Raises `ParseError` on an event that is not shaped like HA's.
        """
        touched: set[str] = set()
        try:
            for entity_id, state in (event.get("a") or {}).items():
                self._states[entity_id] = {"s": state.get("s"), "a": dict(state.get("a") or {})}
                touched.add(entity_id)
            for entity_id, change in (event.get("c") or {}).items():
                current = self._states.setdefault(entity_id, {"s": None, "a": {}})
                plus, minus = change.get("+") or {}, change.get("-") or {}
                if "s" in plus:
                    current["s"] = plus["s"]
                current["a"].update(plus.get("a") or {})
                for name in minus.get("a") or []:
                    current["a"].pop(name, None)
                touched.add(entity_id)
            for entity_id in event.get("r") or []:
                self._states.pop(entity_id, None)
                touched.add(entity_id)
        except (AttributeError, TypeError) as err:
            raise ParseError(f"not a subscribe_entities event: {err}") from err
        readings: list[Reading] = []
        available: dict[str, bool] = {}
        for entity_id in touched:
            entity = self._entities.get(entity_id)
            if entity is None:
                continue
            watts = self._watts(entity, self._states.get(entity_id))
            available[entity.meter] = watts is not None
            if watts is not None:
                readings.append(Reading.of(entity.meter, Quantity.POWER, round(watts, 3), ts))
        return readings, available

    @staticmethod
    def _watts(entity: HaEntityConfig, state: dict[str, Any] | None) -> float | None:
        if state is None or state["s"] in (None, "unavailable", "unknown"):
            return None
        on_off = _attribute(state["a"], entity.state_attribute) if entity.state_attribute else state["s"]
        on_off = str(on_off).lower() if isinstance(on_off, bool) else on_off
        if on_off in entity.off_states:
            return entity.off_w
        if entity.on_w is not None and on_off in entity.on_states:
            return entity.on_w
        raw = _attribute(state["a"], entity.attribute) if entity.attribute else state["s"]
        if raw is None:
            return entity.off_w  # e.g. a light without brightness while it turns on
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None
        return entity.watts(value) if value == value and abs(value) != float("inf") else None


def _attribute(attributes: Mapping[str, Any], path: str) -> Any:
    """The attribute at a dotted path (`usage.power`), or None where the path leads nowhere."""
    node: Any = attributes
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


class HaSource(Source[HaSourceConfig]):
    """Subscribes to the configured entities and emits their power."""

    source_type = "ha"

    async def run(self, ctx: SourceContext) -> None:
        """Read until cancelled; reconnect with backoff; raise `AuthError` on a refused token."""
        for entity in self.config.entities:
            ctx.describe(
                MeterDescription(
                    meter_id=entity.meter, name=entity.entity_id, source_type=self.source_type, via=self.config.id
                )
            )
        backoff = Backoff(initial=1.0, maximum=60.0)
        while True:
            try:
                await self._session(ctx, backoff)
            except SourceConnectionError as err:
                for entity in self.config.entities:
                    ctx.availability(entity.meter, False)
                delay = backoff.next_delay()
                ctx.error("connection", "%s; retrying in %.0f s", err, delay)
                await asyncio.sleep(delay)

    async def _session(self, ctx: SourceContext, backoff: Backoff) -> None:
        url = self.config.url
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(url, heartbeat=30) as ws:
                await self._authenticate(ws)
                await ws.send_json(
                    {"id": 1, "type": "subscribe_entities", "entity_ids": [e.entity_id for e in self.config.entities]}
                )
                parser = HaEntityParser(self.config.entities)
                async for message in ws:
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        break
                    data = message.json()
                    if data.get("type") == "result" and not data.get("success"):
                        raise SourceConnectionError(f"{url}: subscribe_entities failed: {data.get('error')}")
                    if data.get("type") != "event":
                        continue
                    backoff.reset()
                    try:
                        readings, available = parser.feed(data.get("event") or {}, utc_now())
                    except ParseError as err:
                        ctx.error("parse", "Unexpected event from %s: %s", url, err)
                        continue
                    for meter, ok in available.items():
                        ctx.availability(meter, ok)
                    ctx.readings(readings)
        except (aiohttp.ClientError, OSError, ValueError) as err:
            raise SourceConnectionError(f"{url}: {err!r}") from err
        raise SourceConnectionError(f"{url}: connection closed")

    async def _authenticate(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        hello = await ws.receive_json(timeout=30)
        if hello.get("type") != "auth_required":
            raise SourceConnectionError(f"{self.config.url}: expected auth_required, got {hello.get('type')!r}")
        await ws.send_json({"type": "auth", "access_token": self.config.token.get_secret_value()})
        answer = await ws.receive_json(timeout=30)
        if answer.get("type") == "auth_invalid":
            raise AuthError(f"{self.config.url}: token refused: {answer.get('message')}")
        if answer.get("type") != "auth_ok":
            raise SourceConnectionError(f"{self.config.url}: expected auth_ok, got {answer.get('type')!r}")
        _LOGGER.info("Connected to Home Assistant %s at %s", answer.get("ha_version"), self.config.url)
