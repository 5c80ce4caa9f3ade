"""Logging helpers: rate-limited messages, redaction of secrets and identifiers, JSON output."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

#: One redaction table for logs and diagnostics: pattern -> replacement.
REDACTIONS: list[tuple[re.Pattern[str], str]] = [
    # MAC addresses and EUI-64s (meter and device identities are personal data)
    (re.compile(r"\b(?:[0-9A-Fa-f]{2}[:-]){5,7}[0-9A-Fa-f]{2}\b"), "**:**:**:**:**:**"),
    (re.compile(r"\b0x[0-9A-Fa-f]{16}\b"), "0x****************"),
    # credentials in URLs and key=value / "key": "value" pairs
    (re.compile(r"(//[^/:@\s]+:)[^@\s]+@"), r"\1****@"),
    (
        re.compile(
            r"""(?i)(["']?(?:password|passwd|pass|token|secret|api_key|client_secret)["']?\s*[:=]\s*["']?)[^"',\s}]+"""
        ),
        r"\1****",
    ),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1****"),
]


def redact(text: str) -> str:
    """`text` with secrets, MACs and meter identities masked."""
    for pattern, replacement in REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in every record that passes through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for fleet log shipping."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RateLimitedLog:
    """Logs the first message of each key, then at most one summary per `period_s`.

    For errors that can repeat many times a second (garbled serial bytes, malformed
    JSON): the first is logged in full, later ones are counted and reported as
    "(N more in the last 5 min)" with the newest message.
    """

    def __init__(
        self, logger: logging.Logger, period_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._period_s = period_s
        self._clock = clock
        self._state: dict[str, tuple[float, int]] = {}  # key -> (window start, suppressed)

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        """Log `msg % args` under `key`, unless one was logged in this period."""
        now = self._clock()
        started, suppressed = self._state.get(key, (None, 0))
        if started is None or now - started >= self._period_s:
            if suppressed:
                minutes = self._period_s / 60
                msg = f"{msg} (%d more in the last {minutes:g} min)"
                args = (*args, suppressed)
            self._state[key] = (now, 0)
            self._logger.log(level, msg, *args)
        else:
            self._state[key] = (started, suppressed + 1)
