"""`meter-bridge watch`: a live terminal view of the meters' retained states on MQTT.

Above the table, one status line per peer the view depends on: the broker (from the view's own
MQTT connection) and, with `--ha-url`, Home Assistant (an HTTP probe of its web server every
few seconds). Each says whether the peer is up, since when, and why it is down
("broker 127.0.0.1:18883 down since 07:41:00 (connection refused)"), and, once it is back,
when the outage started and how long it lasted. Home Assistant is probed over HTTP rather than
read from its MQTT status topic: the web page is what the householder opens, and
`homeassistant/status` is not retained, so a view started after Home Assistant learns nothing
from it (and nothing at all while the broker is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import aiohttp

from .config import BridgeConfig
from .errors import BridgeError
from .mqtt import MqttClient, endpoint
from .mqttsession import MqttSession

#: How often Home Assistant's web server is probed, and how long one probe may take.
HA_PROBE_INTERVAL_S = 3.0
HA_PROBE_TIMEOUT_S = 5.0


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


@dataclass
class PeerStatus:
    """Up or down, since when and why, for one peer of the live view (its status line)."""

    name: str
    where: str
    up: bool | None = None  # None: not tried yet
    since: datetime | None = None  # when the current state began
    reason: str = ""  # why it is down (the latest failure)
    ever_up: bool = False
    last_outage: tuple[datetime, datetime] | None = None  # (down since, back at) of the latest outage

    def went_up(self, now: datetime) -> None:
        """A connection or an answer succeeded at `now`."""
        if self.up:
            return
        if self.ever_up and self.since is not None:
            self.last_outage = (self.since, now)
        self.up, self.since, self.ever_up, self.reason = True, now, True, ""

    def went_down(self, now: datetime, reason: str) -> None:
        """An attempt failed at `now` because of `reason` (a down period keeps its first moment)."""
        if self.up is not False:
            self.up, self.since = False, now
        self.reason = reason

    def line(self) -> str:
        """The status line: "broker 127.0.0.1:18883 down since 07:41:00 (connection refused)"."""
        head = f"{self.name} {self.where}"
        if self.up is None or self.since is None:
            return f"{head} connecting"
        if not self.up:
            if not self.ever_up:
                return f"{head} not up yet, trying since {_clock(self.since)} ({self.reason})"
            return f"{head} down since {_clock(self.since)} ({self.reason})"
        if self.last_outage is None:
            return f"{head} up since {_clock(self.since)}"
        down, back = self.last_outage
        outage_s = int((back - down).total_seconds())
        return f"{head} up, back since {_clock(back)} (was down from {_clock(down)}, {outage_s} s)"


def failure_reason(error: BaseException) -> str:
    """A short reason for a status line: "connection refused", or the error's own words."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__
    if isinstance(error, TimeoutError):
        return "no answer"
    text = str(error)
    # a BrokerError names the broker first ("MQTT broker 127.0.0.1:18883: ..."): the line already does
    _, colon, rest = text.partition(": ")
    return rest if colon and text.startswith("MQTT broker ") else text or type(error).__name__


def render(states: dict[str, dict[str, Any]], availability: dict[str, str]) -> str:
    """A table of meters with their latest power and totals."""
    lines = [f"{'meter':<16} {'state':<8} {'power W':>10} {'import kWh':>12} {'export kWh':>12}  updated"]
    for meter_id in sorted(states):
        state = states[meter_id]

        def num(key: str, fmt: str, state: dict[str, Any] = state) -> str:
            value = state.get(key)
            width = int(fmt.split(".")[0])
            return format(value, fmt) if isinstance(value, int | float) else "-".rjust(width)

        lines.append(
            f"{meter_id:<16} {availability.get(meter_id, '?'):<8} {num('power', '10.1f')} "
            f"{num('energy_import', '12.3f')} {num('energy_export', '12.3f')}  {str(state.get('ts', ''))[11:19]}"
        )
    return "\n".join(lines)


@dataclass
class LiveView:
    """What the screen shows: the peers' status lines and the meters' latest retained states."""

    peers: list[PeerStatus]
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    availability: dict[str, str] = field(default_factory=dict)

    def screen(self, title: str) -> str:
        """One screen: title, the status lines, the meter table."""
        status = "\n".join(peer.line() for peer in self.peers)
        return f"{title}\n{status}\n\n{render(self.states, self.availability)}\n\n"


async def watch(
    config: BridgeConfig, seconds: float | None = None, ha_url: str | None = None, out: TextIO = sys.stdout
) -> None:
    """Print the view each second until interrupted (or for `seconds`), whether the broker is up or not."""
    deadline = None if seconds is None else time.monotonic() + seconds
    broker = PeerStatus("broker", endpoint(config.mqtt))
    home_assistant = PeerStatus("Home Assistant", ha_url.rstrip("/")) if ha_url else None
    view = LiveView([broker] + ([home_assistant] if home_assistant else []))
    session = MqttSession(
        config.mqtt, f"{config.client_id}-watch-{int(time.time())}", name="watch", initial_s=0.2, maximum_s=5.0
    )

    def down(error: BridgeError) -> None:
        broker.went_down(datetime.now().astimezone(), failure_reason(error))

    tasks = [
        asyncio.create_task(
            session.run(
                lambda client: _receive(client, config, view),
                on_up=lambda: broker.went_up(datetime.now().astimezone()),
                on_down=down,
            ),
            name="watch-mqtt",
        )
    ]
    if home_assistant is not None and ha_url is not None:
        tasks.append(asyncio.create_task(_probe_home_assistant(ha_url, home_assistant), name="watch-ha"))
    title = f"meter-bridge watch ({endpoint(config.mqtt)}), Ctrl-C to stop"
    try:
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(1)
            for task in tasks:
                if task.done():
                    task.result()  # a bug, not a peer going away (those are caught and shown)
            if out.isatty():
                out.write("\x1b[H\x1b[2J")
            out.write(view.screen(title))
            out.flush()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _receive(client: MqttClient, config: BridgeConfig, view: LiveView) -> None:
    base = config.mqtt.base_topic
    await client.subscribe(f"{base}/meter/#")
    async for message in client.messages:
        parts = message.topic.split("/")
        if len(parts) == 3:
            with contextlib.suppress(ValueError):
                view.states[parts[2]] = json.loads(message.payload)
        elif len(parts) == 4 and parts[3] == "availability":
            view.availability[parts[2]] = message.payload.decode(errors="replace")


async def _probe_home_assistant(url: str, status: PeerStatus) -> None:
    """Any HTTP answer from Home Assistant's web server (even 401 or 503) is "up"; no answer is "down"."""
    timeout = aiohttp.ClientTimeout(total=HA_PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            try:
                async with http.get(f"{url.rstrip('/')}/manifest.json", allow_redirects=False) as response:
                    await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                reason = f"no answer within {HA_PROBE_TIMEOUT_S:g} s" if isinstance(err, TimeoutError) else None
                status.went_down(datetime.now().astimezone(), reason or failure_reason(err))
            else:
                status.went_up(datetime.now().astimezone())
            await asyncio.sleep(HA_PROBE_INTERVAL_S)
