"""The bridge's exception hierarchy.

Every error the bridge raises on purpose derives from `BridgeError`, so callers can
tell "our failure, with a message meant for people" from a programming error.
Transports map library errors (OSError, aiohttp.ClientError, serial.SerialException) onto
these in one place each and chain the cause; the MQTT transport (`meterbridge.mqtt`) raises
only `BrokerError` and `BrokerAuthError`.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error the bridge raises deliberately."""


class ConfigError(BridgeError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SourceConnectionError(BridgeError):
    """A source could not reach its device or service (names the endpoint)."""


class SourceTimeoutError(SourceConnectionError, TimeoutError):
    """A source's device or service did not answer in time."""


class AuthError(BridgeError):
    """Credentials were refused. Never retried automatically."""


class BrokerError(SourceConnectionError):
    """The MQTT broker could not be reached, refused, did not answer in time, or the connection
    ended (names the broker). A `SourceConnectionError` because every MQTT part of the bridge,
    sinks included, is fed by its connection to the broker."""


class BrokerAuthError(BrokerError, AuthError):
    """The MQTT broker refused the credentials (CONNACK 4 or 5)."""


class ParseError(BridgeError):
    """Input bytes or JSON could not be turned into readings.

    The only exception a parser raises.
    """


class SinkError(BridgeError):
    """A sink could not deliver (names the endpoint)."""
