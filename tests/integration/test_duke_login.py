"""`meter-bridge duke login` against a local double of Duke Energy's Auth0 tenant.

Duke's tenant (`login.duke-energy.com`) cannot be reached from here, so a contract double
stands in for it. It follows Auth0's published "Authorization Code Flow with PKCE"
(auth0.com/docs, "Call Your API Using the Authorization Code Flow with PKCE"): `GET /authorize`
with `response_type=code`, `client_id`, `redirect_uri`, `scope` (`offline_access` for a refresh
token), `state`, `code_challenge` and `code_challenge_method=S256` ends, once the person has
logged in, in a redirect to `redirect_uri?code=...&state=...`; `POST /oauth/token` with
`grant_type=authorization_code`, `client_id`, `code_verifier`, `code`, `redirect_uri` answers
`access_token`, `id_token`, `refresh_token`, `token_type`, `expires_in`, and `403
{"error": "invalid_grant"}` for a code that is unknown, used, or whose verifier does not hash
to the challenge; `grant_type=refresh_token` answers a new `id_token` (and a rotated refresh
token). The double does not render a login page: `/authorize` stands for the person logging in.

The real library code runs unchanged (aiodukeenergy's `Auth0Client`, its URLs, client id and
redirect): the test's HTTP session resolves `login.duke-energy.com` to the double, which serves a
certificate for that name from a test CA the session trusts.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import jwt
import pytest
from aiodukeenergy import Auth0Client
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from helpers.net import serving
from helpers.tlscerts import TestCa
from meterbridge.cli import main
from meterbridge.errors import AuthError
from meterbridge.sources.duke_energy import RefreshTokenAuth
from meterbridge.sources.duke_login import code_from_answer, login

HOST = "login.duke-energy.com"
CLIENT_ID = "PitoKqxMh8thrFF8rRlYGrAs3LbSD2dj"  # aiodukeenergy's (the Duke app's) Auth0 client


@dataclass
class Tenant:
    """The double's state: codes handed out and what was asked of it."""

    codes: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> its authorize request
    refresh_tokens: set[str] = field(default_factory=set)
    exchanges: int = 0
    authorize_params: dict[str, str] = field(default_factory=dict)


def _id_token(subject: str) -> str:
    # unsigned is fine: the library decodes it without verification (auth0.decode_token)
    return jwt.encode({"sub": subject, "email": "user@example.com", "exp": 4102444800}, "k" * 32, algorithm="HS256")


def _tenant_app(tenant: Tenant) -> web.Application:
    async def authorize(request: web.Request) -> web.Response:
        params = dict(request.query)
        tenant.authorize_params = params
        if params.get("response_type") != "code" or params.get("code_challenge_method") != "S256":
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_urlsafe(16)
        tenant.codes[code] = params
        # the person logged in: back to the app's redirect address with the code and the state
        location = f"{params['redirect_uri']}?{urlencode({'code': code, 'state': params.get('state', '')})}"
        raise web.HTTPFound(location)

    async def token(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        refused = web.json_response({"error": "invalid_grant", "error_description": "Invalid grant"}, status=403)
        if body.get("client_id") != CLIENT_ID:
            return web.json_response({"error": "unauthorized_client"}, status=401)
        if body.get("grant_type") == "refresh_token":
            if body.get("refresh_token") not in tenant.refresh_tokens:
                return refused
            return web.json_response({"id_token": _id_token("u1"), "expires_in": 86400, "token_type": "Bearer"})
        if body.get("grant_type") != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        tenant.exchanges += 1
        asked = tenant.codes.pop(str(body.get("code")), None)  # a code works once
        if asked is None or body.get("redirect_uri") != asked["redirect_uri"]:
            return refused
        digest = hashlib.sha256(str(body.get("code_verifier", "")).encode("ascii")).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != asked["code_challenge"]:
            return refused
        refresh = secrets.token_urlsafe(24)
        answer = {"access_token": "at", "id_token": _id_token("u1"), "token_type": "Bearer", "expires_in": 86400}
        if "offline_access" in asked.get("scope", "").split():
            tenant.refresh_tokens.add(refresh)
            answer["refresh_token"] = refresh
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/authorize", authorize)
    app.router.add_post("/oauth/token", token)
    return app


class _ToDouble(AbstractResolver):
    """Resolves `login.duke-energy.com` (any port) to the double on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host == HOST, f"the login only talks to {HOST}, not {host}"
        return [ResolveResult(hostname=host, host="127.0.0.1", port=self.port, family=socket.AF_INET, proto=0, flags=0)]

    async def close(self) -> None:
        return None


@pytest.fixture
async def duke(tmp_path: Path) -> AsyncIterator[tuple[Tenant, aiohttp.ClientSession]]:
    ca = TestCa(tmp_path / "ca")
    server_cert = ca.issue(HOST, dns_names=[HOST])
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(str(server_cert.cert), str(server_cert.key))
    tenant = Tenant()
    async with serving(_tenant_app(tenant), ssl_context=server_ssl) as port:
        client_ssl = ssl.create_default_context(cafile=str(ca.ca_file))
        connector = aiohttp.TCPConnector(resolver=_ToDouble(port), ssl=client_ssl)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield tenant, session


def _browser(session: aiohttp.ClientSession) -> Any:
    """The person: opens the printed address, logs in, copies where the browser ended up."""

    async def ask(text: str) -> str:
        url = next(line.strip() for line in text.splitlines() if line.strip().startswith("https://"))
        async with session.get(url, allow_redirects=False) as response:
            assert response.status == 302
            return response.headers["Location"]

    return ask


async def test_login_saves_a_refresh_token_the_source_can_use(
    duke: tuple[Tenant, aiohttp.ClientSession], tmp_path: Path
) -> None:
    tenant, session = duke
    token_file = tmp_path / "duke_energy" / "token.json"
    result = await login(session, _browser(session), token_file)

    assert result.refresh_token in tenant.refresh_tokens
    assert tenant.authorize_params["client_id"] == CLIENT_ID
    assert "offline_access" in tenant.authorize_params["scope"].split()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    # the duke_energy source reads the saved token first and gets an ID token with it
    auth = RefreshTokenAuth(session, Auth0Client(session), "stale-from-config", token_file)
    assert jwt.decode(await auth.async_get_id_token(), options={"verify_signature": False})["sub"] == "u1"


async def test_an_address_from_another_attempt_is_refused_before_any_exchange(
    duke: tuple[Tenant, aiohttp.ClientSession], tmp_path: Path
) -> None:
    tenant, session = duke
    first = await login(session, _browser(session), None)
    assert first.refresh_token

    async def stale(text: str) -> str:  # pastes an address from an earlier attempt
        url = next(line.strip() for line in text.splitlines() if line.strip().startswith("https://"))
        async with session.get(url, allow_redirects=False) as response:
            location = response.headers["Location"]
        query = parse_qs(urlsplit(location).query)
        return f"https://{HOST}/ios/callback?code={query['code'][0]}&state=someone-elses"

    exchanges = tenant.exchanges
    with pytest.raises(AuthError, match="another login attempt"):
        await login(session, stale, tmp_path / "t.json")
    assert tenant.exchanges == exchanges
    assert not (tmp_path / "t.json").exists()


async def test_a_used_code_is_refused_by_the_tenant(duke: tuple[Tenant, aiohttp.ClientSession]) -> None:
    tenant, session = duke
    pasted: list[str] = []
    exchanges = tenant.exchanges
    browser = _browser(session)

    async def remember(text: str) -> str:
        pasted.append(await browser(text))
        return pasted[-1]

    await login(session, remember, None)
    code = parse_qs(urlsplit(pasted[0]).query)["code"][0]

    async def again(text: str) -> str:
        return code  # the bare code of the finished login

    with pytest.raises(AuthError, match="refused the login code"):
        await login(session, again, None)
    assert tenant.exchanges == exchanges + 2, "the second exchange reached the tenant and was refused there"


def test_pasted_answers() -> None:
    assert code_from_answer("  abc123\n", "s") == "abc123"
    assert code_from_answer(f"https://{HOST}/ios/cb?code=xyz&state=a%2Bb", "a+b") == "xyz"
    assert code_from_answer(f"https://{HOST}/ios/cb?code=xyz&state=a+b", "a+b") == "xyz"  # `+` read as a space
    with pytest.raises(AuthError, match="access_denied: User cancelled"):
        code_from_answer(f"https://{HOST}/ios/cb?error=access_denied&error_description=User+cancelled", "s")
    with pytest.raises(AuthError, match="no `code=`"):
        code_from_answer(f"https://{HOST}/ios/cb?state=s", "s")
    with pytest.raises(AuthError, match="nothing"):
        code_from_answer("\n", "s")


def test_cli_has_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["duke", "login", "--help"])
    assert exited.value.code == 0
    assert "--token-file" in capsys.readouterr().out
