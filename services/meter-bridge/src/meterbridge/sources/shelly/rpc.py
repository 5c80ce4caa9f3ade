"""Shelly HTTP RPC (`POST http://<host>/rpc/<Method>`) with SHA-256 digest auth.

Gen2+ devices protect RPC with HTTP digest auth (RFC 7616, SHA-256, user `admin`,
realm = the device id); aiohttp's `DigestAuthMiddleware` does the exchange. A
successful call answers 200 with the method's result; a failed one answers with
`{"code": ..., "message": ...}` (Shelly Gen2 API, "RPC protocol"). Library errors are
mapped onto ours here, in one place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import aiohttp

from ...errors import AuthError, SourceConnectionError, SourceTimeoutError
from .relay import ShellyRpcError

ADMIN_USER = "admin"


def auth_ha1(device_id: str, password: str) -> str:
    """`ha1` for `Shelly.SetAuth`: SHA-256 hex of `admin:<device id>:<password>`."""
    return hashlib.sha256(f"{ADMIN_USER}:{device_id}:{password}".encode()).hexdigest()


class ShellyHttpRpc:
    """RPC calls to one device over HTTP; `password` None means no auth is sent.

    Use as `async with ShellyHttpRpc(host, password) as rpc:`; `host` may carry a port.
    """

    def __init__(self, host: str, password: str | None = None, timeout_s: float = 10.0) -> None:
        self.host = host
        self.timeout_s = timeout_s
        middlewares = (aiohttp.DigestAuthMiddleware(ADMIN_USER, password),) if password else ()
        self._password_set = password is not None
        self._session = aiohttp.ClientSession(middlewares=middlewares, timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def __aenter__(self) -> ShellyHttpRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._session.close()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """The result of `method`; raises `AuthError` (401), `ShellyRpcError` (device error),
        `SourceTimeoutError` and `SourceConnectionError` (each naming the host)."""
        url = f"http://{self.host}/rpc/{method}"
        try:
            async with self._session.post(url, json=params or {}) as response:
                body = await response.read()
                status = response.status
        except TimeoutError as err:
            raise SourceTimeoutError(f"{self.host}: no answer to {method} within {self.timeout_s:g} s") from err
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as err:
            raise SourceConnectionError(f"{self.host}: {method}: {err}") from err
        if status == 401:
            reason = "wrong admin password" if self._password_set else "the device needs its admin password"
            raise AuthError(f"{self.host}: authentication failed ({reason})")
        try:
            data = json.loads(body) if body else None
        except ValueError as err:
            raise SourceConnectionError(f"{self.host}: {method}: answer is not JSON (HTTP {status})") from err
        if status != 200:
            if isinstance(data, dict):
                raise ShellyRpcError(self.host, method, int(data.get("code", -1)), str(data.get("message", status)))
            raise SourceConnectionError(f"{self.host}: {method}: HTTP {status}")
        return data
