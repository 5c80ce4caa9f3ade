"""Edge-replication health as Home Assistant sensors, so an operator sees a stuck uplink.

Polls InfluxDB's `GET /api/v2/replications?orgID=` every `influx.replication_poll_s`
and describes, per replication stream, these entities (one HA device "InfluxDB replication";
the HA sink announces them):

- `sensor` *queue*: `currentQueueSizeBytes`, B, `data_size`, `measurement`;
- `sensor` *pending*: `remainingBytesToBeSynced`, B (what the cloud has not confirmed);
- `sensor` *status*: `ok`, `never` (no write replicated yet) or `HTTP <code>: <message>`;
- `binary_sensor` *uplink problem* (`problem`): on when the last response was not 2xx.

State is one retained JSON document on `<base>/influx/replication`; availability is
the bridge's AND `<base>/influx/replication/availability` (offline when InfluxDB does
not answer the poll). Entities of a replication that disappeared leave the catalog, and the
HA sink removes them (empty retained config).

Why not readings of a meter: a status is text and a `Reading` is a float in a fixed
unit; and the queue size of the uplink does not belong in the `meters` bucket that is
itself being replicated. The HTTP call is plain aiohttp: the influxdb-client 1.x model
of a replication predates InfluxDB 2.7's fields (`maxAgeSeconds`) and requires
`remoteBucketID`, which 2.7 leaves null when the stream names the remote bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, TypedDict

import aiohttp

from ...ha_entities import Device, EntityCatalog, EntityDescription
from ...mqtt import MqttClient
from ...mqttsession import MqttSession
from ...sections import InfluxConfig, MqttContext

_LOGGER = logging.getLogger(__name__)

#: The monitor's name in the entity catalog.
CATALOG_OWNER = "influx_replication"

ONLINE = b"online"
OFFLINE = b"offline"


class ReplicationJson(TypedDict, total=False):
    """The fields of InfluxDB 2.7's `Replication` object this module reads."""

    id: str
    name: str
    currentQueueSizeBytes: int
    remainingBytesToBeSynced: int
    maxQueueSizeBytes: int
    latestResponseCode: int | None
    latestErrorMessage: str | None


@dataclass(frozen=True, slots=True)
class ReplicationHealth:
    """What HA shows of one replication stream. Sizes in bytes."""

    key: str
    name: str
    queue_bytes: int
    pending_bytes: int
    status: str
    problem: bool


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "replication"


def parse_replications(body: Any) -> list[ReplicationHealth]:
    """Health of each stream in a `GET /api/v2/replications` body; raises `ValueError` on another shape."""
    if not isinstance(body, dict) or not isinstance(body.get("replications"), list):
        raise ValueError("not a replications list")
    healths = []
    for item in body["replications"]:
        repl: ReplicationJson = item
        code = repl.get("latestResponseCode")
        message = repl.get("latestErrorMessage") or ""
        if code is None or code == 0:
            status, problem = "never", False
        elif 200 <= code < 300:
            status, problem = "ok", False
        else:
            status, problem = f"HTTP {code}: {message}".strip().rstrip(":")[:250], True
        name = str(repl.get("name", ""))
        healths.append(
            ReplicationHealth(
                key=_slug(name),
                name=name,
                queue_bytes=int(repl.get("currentQueueSizeBytes") or 0),
                pending_bytes=int(repl.get("remainingBytesToBeSynced") or 0),
                status=status,
                problem=problem,
            )
        )
    return healths


#: (suffix, component, entity name, classes and extra discovery keys, value key)
_ENTITIES: tuple[tuple[str, str, str, dict[str, Any], str], ...] = (
    (
        "queue",
        "sensor",
        "queue",
        {"device_class": "data_size", "state_class": "measurement", "unit": "B"},
        "queue_bytes",
    ),
    (
        "pending",
        "sensor",
        "pending",
        {"device_class": "data_size", "state_class": "measurement", "unit": "B"},
        "pending_bytes",
    ),
    ("status", "sensor", "status", {"icon": "mdi:cloud-sync"}, "status"),
    (
        "problem",
        "binary_sensor",
        "uplink problem",
        {"device_class": "problem", "extra": (("payload_on", True), ("payload_off", False))},
        "problem",
    ),
)

#: The one HA device of every stream's entities.
DEVICE = Device("influx_replication", "InfluxDB replication", model="InfluxDB 2 edge replication")


def state_topic(base: str) -> str:
    """The retained JSON state of every stream."""
    return f"{base}/influx/replication"


def availability_topic(base: str) -> str:
    """`online` while InfluxDB answers the poll."""
    return f"{base}/influx/replication/availability"


def replication_entities(base: str, health: ReplicationHealth) -> list[EntityDescription]:
    """The entities of one stream (the HA sink announces them)."""
    return [
        EntityDescription(
            component,
            f"influx_replication_{health.key}_{suffix}",
            f"{health.name} {label}",
            DEVICE,
            state_topic=state_topic(base),
            value_template=f"{{{{ value_json['{health.key}'].{value_key} }}}}",
            availability=(availability_topic(base),),
            **details,
        )
        for suffix, component, label, details, value_key in _ENTITIES
    ]


def state_payload(healths: list[ReplicationHealth]) -> bytes:
    """`{"<key>": {"queue_bytes": .., "pending_bytes": .., "status": "ok", "problem": false}, ...}`."""
    body = {
        h.key: {
            "queue_bytes": h.queue_bytes,
            "pending_bytes": h.pending_bytes,
            "status": h.status,
            "problem": h.problem,
        }
        for h in healths
    }
    return json.dumps(body, separators=(",", ":")).encode()


class ReplicationMonitor:
    """Polls InfluxDB's replications and publishes their health to Home Assistant over MQTT."""

    def __init__(self, config: MqttContext, influx: InfluxConfig, catalog: EntityCatalog | None = None) -> None:
        self._config = config
        self._influx = influx
        self._base = config.mqtt.base_topic
        #: Where the streams' entities are described (the bridge's catalog: the HA sink announces them).
        self.catalog = EntityCatalog() if catalog is None else catalog
        self._org_id = influx.org_id
        self._task: asyncio.Task[None] | None = None
        #: The last health seen (for tests and `/metrics`).
        self.last: list[ReplicationHealth] | None = None

    async def start(self) -> None:
        """Start the polling task."""
        self._task = asyncio.create_task(self._run(), name="influx-replication-monitor")

    async def close(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll(self, session: aiohttp.ClientSession) -> list[ReplicationHealth]:
        """One poll; raises `aiohttp.ClientError`, `TimeoutError` or `ValueError` on failure."""
        base = self._influx.url.rstrip("/")
        if self._org_id is None:
            async with session.get(f"{base}/api/v2/orgs", params={"org": self._influx.org}) as response:
                response.raise_for_status()
                orgs = (await response.json()).get("orgs") or []
            if not orgs:
                raise ValueError(f"organisation {self._influx.org!r} not found")
            self._org_id = str(orgs[0]["id"])
        async with session.get(f"{base}/api/v2/replications", params={"orgID": self._org_id}) as response:
            response.raise_for_status()
            return parse_replications(await response.json())

    async def _run(self) -> None:
        headers = {"Authorization": f"Token {self._influx.token.get_secret_value()}"}
        timeout = aiohttp.ClientTimeout(total=self._influx.timeout_s)
        mqtt = MqttSession(
            self._config.mqtt, f"{self._config.client_id}-influx-repl", name="Replication monitor", maximum_s=60.0
        )
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

            async def body(client: MqttClient) -> None:
                while True:
                    await self._publish(client, session)
                    await asyncio.sleep(self._influx.replication_poll_s)

            await mqtt.run(body)

    async def _publish(self, client: MqttClient, session: aiohttp.ClientSession) -> None:
        try:
            healths = await self.poll(session)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as err:
            _LOGGER.debug("Replication monitor: poll of %s failed: %s", self._influx.url, err)
            await client.publish(availability_topic(self._base), OFFLINE, qos=1, retain=True)
            return
        self.last = healths
        # a stream that disappeared leaves the catalog, and with it Home Assistant
        self.catalog.describe(CATALOG_OWNER, [e for h in healths for e in replication_entities(self._base, h)])
        await client.publish(state_topic(self._base), state_payload(healths), qos=1, retain=True)
        await client.publish(availability_topic(self._base), ONLINE, qos=1, retain=True)
