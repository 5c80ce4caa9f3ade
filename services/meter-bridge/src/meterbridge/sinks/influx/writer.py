"""POSTing line protocol to InfluxDB 2's write API (`POST /api/v2/write`), with aiohttp.

The API, as documented (https://docs.influxdata.com/influxdb/v2/api/#operation/PostWrite):
`org`, `bucket` and `precision` as query parameters, `Authorization: Token <token>`,
the lines as a `text/plain` body; 204 means written, an error status comes with a JSON
body and, for 429/503, a `Retry-After` header in seconds. VictoriaMetrics and InfluxDB 3
accept the same request.

influxdb-client's async write API does the same; it is not used in the bridge because
importing influxdb-client costs 15 MiB of the bridge's 60 MiB memory budget (measured:
RSS after import). `meter-bridge` still uses influxdb-client's management API in the
separate `influx-provision` process.
"""

from __future__ import annotations

import contextlib

import aiohttp

from ...errors import SinkError
from .lineprotocol import PRECISION


class WriteRejectedError(SinkError):
    """InfluxDB answered a write with an error status (`status`, `reason`, `body`, `retry_after_s`)."""

    def __init__(self, status: int, reason: str, body: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status} {reason}: {body}".strip())
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after_s = retry_after_s


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (None when absent or an HTTP date)."""
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    return None


class InfluxWriter:
    """One keep-alive HTTP session to InfluxDB's write API."""

    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float) -> None:
        self._url = url.rstrip("/") + "/api/v2/write"
        self._params = {"org": org, "bucket": bucket, "precision": PRECISION}
        self._headers = {"Authorization": f"Token {token}", "Content-Type": "text/plain; charset=utf-8"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def write(self, payload: bytes) -> None:
        """Write lines; raises `WriteRejectedError`, `aiohttp.ClientError`, `OSError` or `TimeoutError`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.post(self._url, params=self._params, data=payload, headers=self._headers) as response:
            if 200 <= response.status < 300:
                return
            body = (await response.text(errors="replace"))[:500]
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise WriteRejectedError(response.status, response.reason or "", body, retry_after)

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
