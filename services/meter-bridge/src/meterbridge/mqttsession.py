"""One supervised MQTT session: the reconnect loop every MQTT part of the bridge shares.

`MqttSession.run(body)` connects (through `mqtt.make_client`), runs `body(client)` and, when
the connection fails or drops, waits with jittered exponential backoff and runs it again on a
new connection, until `body` returns or `closing()` says stop. It owns:

- the log lines: "<name>: MQTT broker host:port unavailable: ...; retrying" once at WARNING when
  the broker goes away, each further failed attempt at DEBUG, and "<name>: connected to MQTT
  broker host:port again" once at INFO when it is back (STYLE.md: log going down and coming
  back, not every failure);
- what the transport's errors mean for the loop: credentials refused (`BrokerAuthError`, an
  `AuthError`) are retried only after the longest delay and logged at ERROR; anything else
  (`BrokerError`, a `SourceConnectionError` naming the broker) after the backoff;
- re-subscription: `body` runs again on every new connection, so whatever it subscribes to
  and announces is subscribed to and announced again.

Callers supply only their session body and, optionally, `on_down(error)` (count the error,
mark things stale) and `on_up()` (mark connected).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from .backoff import Backoff
from .errors import AuthError, BridgeError, BrokerError
from .mqtt import MqttClient, Will, endpoint, make_client
from .sections import MqttConfig

_LOGGER = logging.getLogger(__name__)

SessionBody = Callable[[MqttClient], Awaitable[None]]
Hook = Callable[..., Awaitable[None] | None]


class MqttSession:
    """A connection to the bridge's broker that keeps coming back (see the module docstring)."""

    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        *,
        name: str,
        will: Will | None = None,
        initial_s: float = 1.0,
        maximum_s: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.name = name
        self.will = will
        self.backoff = Backoff(initial=initial_s, maximum=maximum_s)
        self.log = logger or _LOGGER
        #: Failed attempts since the last successful connect.
        self.failures = 0
        self.connected = False

    async def run(
        self,
        body: SessionBody,
        *,
        on_up: Hook | None = None,
        on_down: Hook | None = None,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        """Run `body` on a connection, again on a new one whenever it fails, until `closing()`.

        A `body` that returns while not closing (a message iterator that simply ended) is run
        again on a new connection at once.
        """
        while not closing():
            try:
                async with make_client(self.config, self.client_id, will=self.will) as client:
                    self._up()
                    await _call(on_up)
                    await body(client)
            except BrokerError as error:
                self.connected = False
                await _call(on_down, error)
                if closing():
                    return
                self._down(error)
                refused = isinstance(error, AuthError)
                await asyncio.sleep(self.backoff.maximum if refused else self.backoff.next_delay())

    def _up(self) -> None:
        self.connected = True
        if self.failures:
            self.log.info("%s: connected to MQTT broker %s again", self.name, endpoint(self.config))
        else:
            self.log.info("%s: connected to MQTT broker %s", self.name, endpoint(self.config))
        self.failures = 0
        self.backoff.reset()

    def _down(self, error: BridgeError) -> None:
        self.failures += 1
        if isinstance(error, AuthError):
            self.log.error("%s: %s", self.name, error)
        elif self.failures == 1:
            self.log.warning("%s: %s; retrying", self.name, error)
        else:
            self.log.debug("%s: attempt %d failed: %s", self.name, self.failures, error)


async def _call(hook: Hook | None, *args: object) -> None:
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result
