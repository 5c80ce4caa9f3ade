"""The InfluxDB sink: readings -> line protocol -> (memory | durable spool) -> `/api/v2/write`.

Flow and guarantees:

- `handle` encodes readings (see `lineprotocol`) into an in-memory queue and returns.
- The sender sends the in-memory queue in batches (when `batch_size` lines are waiting
  or the oldest has waited `flush_interval_s`). A batch InfluxDB acknowledges in time
  never touches the disk: with a healthy local InfluxDB the SD card sees ~nothing.
- The syncer writes every line that is still unacknowledged after 3/4 of
  `spool.sync_interval_s` to the SQLite spool (one transaction), so a `kill -9` loses
  at most `sync_interval_s` of readings (1 s by default; measured 0.4-0.9 s).
- Whatever is in the spool (backlog after an outage or a restart) is replayed oldest
  first, one full batch per round, alternating with live batches: the backlog drains at
  the speed InfluxDB accepts and live data is never starved behind it.
- 5xx, 429 and connection errors are retried with jittered exponential backoff (a
  `Retry-After` is honoured); 401/403/404 (token or bucket wrong) are retried slowly and
  logged as errors, the data stays spooled; any other 4xx means the data itself is bad:
  that batch is moved to the spool's quarantine table with the reason.
- InfluxDB overwrites a point with the same series and timestamp, so a batch re-sent
  after a lost acknowledgement does not duplicate data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from ...asyncutil import wait_event
from ...backoff import Backoff
from ...errors import SinkError
from ...ha_entities import EntityCatalog
from ...logutil import RateLimitedLog
from ...model import Event, MeterDescription, Point, Reading
from ...sections import InfluxConfig, MqttContext, SpoolConfig
from .. import Sink
from .lineprotocol import Line, encode, encode_point
from .replication import ReplicationMonitor
from .spool import Spool
from .writer import InfluxWriter, WriteRejectedError

_LOGGER = logging.getLogger(__name__)

#: Status codes that mean "the token, org or bucket is wrong": not the data's fault.
BLOCKED_STATUSES = frozenset({401, 403, 404})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after a failed write: `retry`, `blocked` (retry slowly) or `quarantine`."""

    action: str
    reason: str
    retry_after_s: float | None = None


def classify(err: BaseException) -> Verdict:
    """Decide on a failed write from its exception (pure; unknown exceptions are retried)."""
    if isinstance(err, WriteRejectedError):
        status = err.status
        reason = str(err)[:500]
        retry_after = err.retry_after_s
        if status == 429 or status >= 500 or status == 0:
            return Verdict("retry", reason, retry_after)
        if status in BLOCKED_STATUSES:
            return Verdict("blocked", reason, retry_after)
        return Verdict("quarantine", reason)
    return Verdict("retry", f"{type(err).__name__}: {err}"[:500])


@dataclass(slots=True)
class _Pending:
    line: Line
    since: float


@dataclass(slots=True)
class _InFlight:
    """The batch being sent: from memory (`lines`) and/or already in the spool (`rows`)."""

    lines: list[_Pending] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    from_spool: bool = False


class InfluxSink(Sink):
    """Batched, durable writes of readings to InfluxDB 2 (or anything speaking `/api/v2/write`)."""

    name = "influx"

    def __init__(
        self,
        config: MqttContext,
        influx: InfluxConfig,
        spool: SpoolConfig,
        clock: Callable[[], float] = time.monotonic,
        catalog: EntityCatalog | None = None,
    ) -> None:
        super().__init__()
        self._site_id = config.site.id
        self._influx = influx
        self._spool_config = spool
        self._clock = clock
        self._descriptions: dict[str, MeterDescription] = {}
        self._memory: deque[_Pending] = deque()
        self._inflight: _InFlight | None = None
        self._spool: Spool | None = None
        self._client: InfluxWriter | None = None
        self._wake = asyncio.Event()
        self._down = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._log = RateLimitedLog(_LOGGER)
        self._reported_drops = 0
        self.monitor: ReplicationMonitor | None = (
            ReplicationMonitor(config, influx, catalog) if self._influx.replication_poll_s > 0 else None
        )
        self.stats.connected = None
        for gauge in ("sent_readings", "sent_batches", "spool_dropped_readings", "quarantined_batches"):
            self.stats.gauges[gauge] = 0

    @property
    def spool(self) -> Spool:
        """The open spool (after `start`); raises `SinkError` before."""
        if self._spool is None:
            raise SinkError("the influx sink is not started")
        return self._spool

    # -- hub side ---------------------------------------------------------------------------

    async def handle(self, events: Sequence[Event]) -> None:
        """Encode readings (and `Point`s) into the in-memory queue; remember meter descriptions for tags."""
        readings: list[Reading] = []
        points: list[Line] = []
        for event in events:
            if isinstance(event, Reading):
                readings.append(event)
            elif isinstance(event, MeterDescription):
                self._descriptions[event.meter_id] = event
            elif isinstance(event, Point):
                line = encode_point(event)
                if line is not None:
                    points.append(line)
        if readings or points:
            now = self._clock()
            was_empty = not self._memory
            self._memory.extend(_Pending(line, now) for line in encode(readings, self._site_id, self._descriptions))
            self._memory.extend(_Pending(line, now) for line in points)
            self.stats.queued = len(self._memory)
            # The sender sleeps until the oldest line is due; wake it only when that changes
            # (the first line, or a full batch), not for every reading.
            if was_empty or len(self._memory) >= self._influx.batch_size:
                self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (raises `SinkError` if it cannot), then start sender, syncer and monitor."""
        spool_cfg = self._spool_config
        self._spool = Spool(spool_cfg.path, spool_cfg.max_bytes, spool_cfg.quarantine_max_bytes)
        if self._spool.rows:
            _LOGGER.info(
                "Influx spool %s holds %d readings from before: replaying", spool_cfg.path, self._spool.readings
            )
        self._client = InfluxWriter(
            self._influx.url,
            self._influx.token.get_secret_value(),
            self._influx.org,
            self._influx.bucket,
            self._influx.timeout_s,
        )
        self._update_gauges()
        self._tasks = [
            asyncio.create_task(self._sender(), name="influx-sender"),
            asyncio.create_task(self._syncer(), name="influx-syncer"),
        ]
        if self.monitor is not None:
            await self.monitor.start()

    async def close(self) -> None:
        """Stop sending and spool everything unacknowledged (it replays on the next start)."""
        self._closing = True
        if self.monitor is not None:
            await self.monitor.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._spool is not None:
            self._persist_memory()
            self._spool.close()
            self._spool = None
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def wait_sent(self, timeout_s: float) -> bool:
        """Wait until InfluxDB acknowledged every reading handled so far (True), or `timeout_s` passed (False).

        For one-shot writers (`meter-bridge import`): the bridge itself never waits, it spools.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._memory or self._inflight is not None or (self._spool is not None and self._spool.rows):
            if loop.time() >= deadline:
                return False
            self._wake.set()
            await asyncio.sleep(0.05)
        return True

    # -- durability -------------------------------------------------------------------------

    def _oldest_unsynced(self) -> float | None:
        if self._inflight is not None and not self._inflight.from_spool and not self._inflight.rows:
            return self._inflight.lines[0].since
        return self._memory[0].since if self._memory else None

    def _persist_memory(self) -> None:
        """Write the unsynced in-flight batch, then the memory queue, to the spool (in order)."""
        spool = self.spool
        inflight = self._inflight
        if inflight is not None and not inflight.from_spool and not inflight.rows:
            inflight.rows = spool.append([p.line for p in inflight.lines], self._influx.batch_size)
        if self._memory:
            spool.append([p.line for p in self._memory], self._influx.batch_size)
            self._memory.clear()
        self._update_gauges()

    async def _syncer(self) -> None:
        window = self._spool_config.sync_interval_s
        while True:
            await asyncio.sleep(window / 8)
            oldest = self._oldest_unsynced()
            # at 3/4 of the window (so at most 7/8 after the tick): the rest is margin for a
            # slow commit; a batch acknowledged before then (flush_interval_s < 3/4 of the
            # window, 0.5 s of 1 s by default) never touches the disk
            if oldest is not None and self._clock() - oldest >= window * 0.75:
                try:
                    self._persist_memory()
                except SinkError as err:
                    self._spool_failed(err)

    def _spool_failed(self, err: SinkError) -> None:
        """Count and log (rate-limited) a spool that cannot be written; readings stay in memory."""
        self.stats.errors["spool"] += 1
        self._log.log(logging.ERROR, "spool", "%s", err)

    def _update_gauges(self) -> None:
        spool = self._spool
        self.stats.queued = len(self._memory)
        if spool is None:
            return
        gauges = self.stats.gauges
        gauges["spool_bytes"] = spool.bytes
        gauges["spool_readings"] = spool.readings
        gauges["spool_dropped_readings"] = spool.dropped_readings
        gauges["quarantine_bytes"] = spool.quarantine_bytes
        if spool.dropped_readings > self._reported_drops:
            self._reported_drops = spool.dropped_readings
            self._log.log(
                logging.WARNING,
                "spool-full",
                "Influx spool is full (%d bytes): dropped the oldest readings, %d so far",
                spool.max_bytes,
                spool.dropped_readings,
            )

    # -- sending ----------------------------------------------------------------------------

    def _memory_due(self) -> bool:
        if not self._memory or self._down:
            return False
        if len(self._memory) >= self._influx.batch_size:
            return True
        return self._clock() - self._memory[0].since >= self._influx.flush_interval_s

    async def _sender(self) -> None:
        backoff = Backoff(initial=1.0, maximum=self._influx.max_retry_delay_s)
        while True:
            if self._down and not (self._spool is not None and self._spool.rows):
                self._down = False  # nothing spooled to probe with: let live data try
            delay: float | None = None
            if self._memory_due():
                batch = [self._memory.popleft() for _ in range(min(len(self._memory), self._influx.batch_size))]
                self._inflight = _InFlight(lines=batch)
                delay = await self._attempt(backoff)
            if delay is None and self._spool is not None and self._spool.rows:
                head = self._spool.head(self._influx.batch_size)
                if head is not None:
                    self._inflight = _InFlight(rows=list(head.row_ids), from_spool=True)
                    delay = await self._attempt(backoff, head.payload, head.readings)
                    if delay is None:
                        continue  # more backlog: next round (after a live batch if one is due)
            if delay is not None:
                await asyncio.sleep(delay)  # down: the syncer spools what arrives meanwhile
                continue
            self._wake.clear()
            if self._memory_due():
                continue
            due_in = None
            if self._memory and not self._down:
                due_in = self._memory[0].since + self._influx.flush_interval_s - self._clock()
            await wait_event(self._wake, due_in)

    async def _attempt(
        self, backoff: Backoff, payload: bytes | None = None, readings: int | None = None
    ) -> float | None:
        """Send the in-flight batch; returns None on success, else the delay before the next try."""
        inflight = self._inflight
        if inflight is None or self._client is None:  # pragma: no cover - set by the caller
            return None
        if payload is None:
            payload = "\n".join(p.line.text for p in inflight.lines).encode()
            readings = sum(p.line.readings for p in inflight.lines)
        try:
            await self._client.write(payload)
        except asyncio.CancelledError:
            raise
        except (WriteRejectedError, aiohttp.ClientError, OSError, TimeoutError) as err:
            return self._failed(backoff, classify(err))
        self._inflight = None
        if inflight.rows:
            try:
                self.spool.delete(inflight.rows)
            except SinkError as err:
                # sent but still spooled: re-sent later, and InfluxDB overwrites the same points
                self._spool_failed(err)
        if self._down:
            _LOGGER.info("InfluxDB %s accepts writes again", self._influx.url)
        self._down = False
        self.stats.connected = True
        backoff.reset()
        self.stats.gauges["sent_readings"] += readings or 0
        self.stats.gauges["sent_batches"] += 1
        self._update_gauges()
        return None

    def _failed(self, backoff: Backoff, verdict: Verdict) -> float | None:
        inflight = self._inflight
        if inflight is None:  # pragma: no cover
            return None
        # spools a live batch (it gets row ids) and then what arrived meanwhile: order kept
        try:
            self._persist_memory()
        except SinkError as err:
            # disk full or unwritable: the sender must live on; an unspooled live batch goes
            # back to the front of the memory queue (order kept) and is retried from there
            self._spool_failed(err)
            if verdict.action != "quarantine" and not inflight.from_spool and not inflight.rows:
                self._memory.extendleft(reversed(inflight.lines))
                self._update_gauges()
        self._inflight = None
        if verdict.action == "quarantine":
            self.spool.quarantine(inflight.rows, verdict.reason)
            self.stats.gauges["quarantined_batches"] += 1
            self.stats.errors["quarantined"] += 1
            self._log.log(
                logging.ERROR, "quarantine", "InfluxDB refused a batch (%s): quarantined, not retried", verdict.reason
            )
            self._update_gauges()
            return None
        self.stats.errors[verdict.action] += 1
        self.stats.connected = False
        delay = backoff.next_delay()
        if verdict.action == "blocked":
            delay = max(delay, min(30.0, self._influx.max_retry_delay_s))
        if verdict.retry_after_s is not None:
            delay = max(delay, min(verdict.retry_after_s, self._influx.max_retry_delay_s))
        if not self._down:
            level = logging.ERROR if verdict.action == "blocked" else logging.WARNING
            _LOGGER.log(level, "InfluxDB %s write failed (%s); spooling and retrying", self._influx.url, verdict.reason)
        else:
            _LOGGER.debug("InfluxDB write failed again (%s); next try in %.1f s", verdict.reason, delay)
        self._down = True
        return delay
