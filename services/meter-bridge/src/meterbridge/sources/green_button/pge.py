"""PG&E Share My Data (self-access) client: OAuth client_credentials and ESPI over mutual TLS.

PG&E's flow: POST `/datacustodian/oauth/v2/token` with `grant_type=client_credentials`,
HTTP Basic (client id and secret) and the client certificate; the answer carries
`client_access_token` and `expires_in` (s). ESPI resources are then fetched with
`Authorization: Bearer <token>` and the same certificate. The certificate is loaded into the
TLS context itself, so it is presented on every handshake whatever CA names the server lists
(a client that only sends it when the server names its CA is refused by PG&E).
"""

from __future__ import annotations

import base64
import logging
import ssl
import stat
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from ...errors import AuthError, ConfigError, SourceConnectionError, SourceTimeoutError

_LOGGER = logging.getLogger(__name__)
TOKEN_PATH = "/datacustodian/oauth/v2/token"  # noqa: S105 - a URL path, not a secret
#: The test authorization server used for the registration's connectivity test (PG&E's "Testing
#: details" page and the token URL in its test instructions); resources stay on the same host.
TEST_TOKEN_PATH = "/datacustodian/test/oauth/v2/token"  # noqa: S105 - a URL path, not a secret
TOKEN_PATHS = {"production": TOKEN_PATH, "test": TEST_TOKEN_PATH}
#: Refresh this long before the token's stated expiry (clock skew, request time).
EXPIRY_MARGIN_S = 60.0


def check_key_file(path: Path) -> None:
    """Refuse a private key that is missing or readable by group/others (`ConfigError`)."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ConfigError([f"{path}: cannot read the client key: {err}"]) from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError([f"{path}: the client key must not be readable by group or others (chmod 600)"])


def client_ssl_context(cert_file: Path, key_file: Path, ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying TLS context that always presents `cert_file`/`key_file`. Raises `ConfigError`."""
    check_key_file(key_file)
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError([f"{cert_file}: cannot load the client certificate/key: {err}"]) from err
    return context


class ShareMyDataClient:
    """Token handling and ESPI downloads for one PG&E Share My Data registration.

    The token is reused until `EXPIRY_MARGIN_S` before it expires, and fetched again once
    if a resource answers 401. Raises `AuthError` (credentials or certificate refused),
    `SourceTimeoutError`, `SourceConnectionError` (naming the URL).
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        ssl_context: ssl.SSLContext,
        timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        token_path: str = TOKEN_PATH,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_path = token_path
        # HTTP Basic built by hand: aiohttp's BasicAuth helper is deprecated for aiohttp 4
        self._basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_fetched = 0

    async def token(self, session: aiohttp.ClientSession) -> str:
        """A valid access token, fetched only when none is held or it is about to expire."""
        if self._token is not None and self._clock() < self._expires_at - EXPIRY_MARGIN_S:
            return self._token
        url = self.base_url + self.token_path
        try:
            async with session.post(
                url,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": self._basic},
                ssl=self._ssl,
                timeout=self._timeout,
            ) as response:
                if response.status in (400, 401, 403):
                    raise AuthError(f"{url}: credentials refused (HTTP {response.status})")
                response.raise_for_status()
                body = await response.json(content_type=None)
        except TimeoutError as err:
            raise SourceTimeoutError(f"{url}: no answer") from err
        except (aiohttp.ClientSSLError, ssl.SSLError) as err:
            raise AuthError(f"{url}: TLS handshake refused (client certificate?): {err}") from err
        except (aiohttp.ClientError, OSError, ValueError) as err:
            raise SourceConnectionError(f"{url}: {err}") from err
        try:
            token = str(body["client_access_token"])
            expires_in = float(body.get("expires_in", 3600))
        except (KeyError, TypeError, ValueError) as err:
            raise SourceConnectionError(f"{url}: unexpected token answer") from err
        self._token, self._expires_at = token, self._clock() + expires_in
        self.tokens_fetched += 1
        _LOGGER.debug("Share My Data token fetched, valid %.0f s", expires_in)
        return token

    async def fetch(self, session: aiohttp.ClientSession, path: str, params: dict[str, str] | None = None) -> bytes:
        """GET an ESPI resource (`path` below the base URL) with Bearer token and certificate."""
        url = self.base_url + path
        for attempt in range(2):
            token = await self.token(session)
            try:
                async with session.get(
                    url,
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    ssl=self._ssl,
                    timeout=self._timeout,
                ) as response:
                    if response.status == 401 and attempt == 0:
                        self._token = None  # revoked or expired early: fetch a new one once
                        continue
                    if response.status in (401, 403):
                        raise AuthError(f"{url}: access refused (HTTP {response.status})")
                    response.raise_for_status()
                    return await response.read()
            except TimeoutError as err:
                raise SourceTimeoutError(f"{url}: no answer") from err
            except (aiohttp.ClientSSLError, ssl.SSLError) as err:
                raise AuthError(f"{url}: TLS handshake refused (client certificate?): {err}") from err
            except (aiohttp.ClientError, OSError) as err:
                raise SourceConnectionError(f"{url}: {err}") from err
        raise AuthError(f"{url}: access refused after a new token")  # pragma: no cover - loop returns or raises
