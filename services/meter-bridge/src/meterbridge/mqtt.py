"""Building aiomqtt clients from the bridge's MQTT settings, in one place.

Every part of the bridge that talks MQTT (the HA sink, MQTT-based sources, flex)
opens its own client through `make_client`, with its own client id, so a slow
subscriber never holds up a publisher.
"""

from __future__ import annotations

import logging
import ssl
import time

import aiomqtt

from .config import MqttConfig

#: Bound on messages waiting in a client's incoming queue (aiomqtt's default is unbounded).
MAX_QUEUED_INCOMING = 10_000


class DiscardedMessagesFilter(logging.Filter):
    """Folds aiomqtt's one-warning-per-message "queue is full" flood into a count.

    aiomqtt logs a WARNING for every message it discards when a client's incoming queue
    (`MAX_QUEUED_INCOMING`) is full; in a burst that is thousands of lines a second and a
    tenth of the CPU. The first is let through, later ones are counted and reported at
    most once per `period_s` as one line with the count. `discarded` is the running total.
    """

    MESSAGE = "Message queue is full. Discarding message."

    def __init__(self, period_s: float = 60.0) -> None:
        super().__init__()
        self.period_s = period_s
        self.discarded = 0
        self._window_start: float | None = None
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self.MESSAGE:
            return True
        self.discarded += 1
        now = time.monotonic()
        if self._window_start is not None and now - self._window_start < self.period_s:
            self._suppressed += 1
            return False
        if self._suppressed:
            record.msg = (
                f"{self.MESSAGE} ({self._suppressed} more discarded before this one; the bridge is not keeping up)"
            )
        self._window_start, self._suppressed = now, 0
        return True


#: The logger every MQTT client of the bridge uses (aiomqtt's own, with the filter above).
MQTT_LOGGER = logging.getLogger("meterbridge.mqtt.client")
DISCARDED = DiscardedMessagesFilter()
MQTT_LOGGER.addFilter(DISCARDED)


def endpoint(config: MqttConfig) -> str:
    """`host:port` of the broker, for log messages."""
    return f"{config.host}:{config.port}"


def make_client(config: MqttConfig, client_id: str, will: aiomqtt.Will | None = None) -> aiomqtt.Client:
    """An unconnected client for the configured broker (use it with `async with`)."""
    tls_context = None
    if config.tls.enabled:
        tls_context = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
        if config.tls.insecure:
            tls_context.check_hostname = False
    return aiomqtt.Client(
        hostname=config.host,
        port=config.port,
        username=config.username,
        password=config.password.get_secret_value(),
        identifier=client_id,
        keepalive=config.keepalive_s,
        will=will,
        tls_context=tls_context,
        max_queued_incoming_messages=MAX_QUEUED_INCOMING,
        timeout=10,
        logger=MQTT_LOGGER,
    )
