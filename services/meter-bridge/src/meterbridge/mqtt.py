"""Building aiomqtt clients from the bridge's MQTT settings, in one place.

Every part of the bridge that talks MQTT (the HA sink, MQTT-based sources, flex)
opens its own client through `make_client`, with its own client id, so a slow
subscriber never holds up a publisher.
"""

from __future__ import annotations

import ssl

import aiomqtt

from .config import MqttConfig

#: Bound on messages waiting in a client's incoming queue (aiomqtt's default is unbounded).
MAX_QUEUED_INCOMING = 10_000


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
    )
