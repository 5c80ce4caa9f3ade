"""PG&E Share My Data client against a local HTTPS server that requires a client certificate.

The server stands in for PG&E's endpoints and follows PG&E's documented Share My Data
self-access flow: `POST /datacustodian/oauth/v2/token` (grant_type=client_credentials, HTTP
Basic, mutual TLS) answers `client_access_token` + `expires_in`, and so does the test
authorization server `/datacustodian/test/oauth/v2/token` used for the registration's
connectivity test (its tokens are test tokens, told apart here); ESPI resources under
`/GreenButtonConnect/espi/1_1/resource/...` need `Authorization: Bearer` and the same
certificate. It is a contract double: PG&E itself cannot be reached from here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import ssl
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr, ValidationError

from helpers.net import free_port, serving
from helpers.tlscerts import CertSet, TestCa, make_certs
from meterbridge.cli import main
from meterbridge.config import load_config
from meterbridge.errors import AuthError, ConfigError, SourceConnectionError
from meterbridge.model import Quantity, Reading
from meterbridge.sources import SourceContext
from meterbridge.sources.green_button.credentials import write_pem_files
from meterbridge.sources.green_button.espi import parse_bytes
from meterbridge.sources.green_button.pge import ShareMyDataClient, check_key_file, client_ssl_context
from meterbridge.sources.green_button.source import GreenButtonSource, GreenButtonSourceConfig
from meterbridge.stats import SourceStats

FIXTURE = (
    Path(__file__).resolve().parent.parent / "fixtures" / "green_button" / "feed_15min_fall_dst_received_duplicate.xml"
)
RESOURCE = "/GreenButtonConnect/espi/1_1/resource/Batch/Subscription/5"
CLIENT_ID, CLIENT_SECRET = "hems-client-id", "s3cret-for-tests"


@dataclass
class FakePge:
    """State of the stand-in server: tokens issued and valid, requests seen."""

    url: str
    expires_in: int = 3600
    valid_tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    resource_requests: int = 0
    #: token path -> requests to it (production and test endpoints)
    token_paths: dict[str, int] = field(default_factory=dict)
    ca: TestCa | None = None


@pytest.fixture
async def pge(tmp_path: Path) -> AsyncIterator[tuple[FakePge, CertSet]]:
    ca = TestCa(tmp_path / "certs")
    server, client = ca.issue("127.0.0.1", file_stem="server"), ca.issue("hems-client", file_stem="client")
    certs = CertSet(ca.ca_file, server.cert, server.key, client.cert, client.key)
    port = free_port()
    state = FakePge(f"https://127.0.0.1:{port}", ca=ca)

    async def token(request: web.Request) -> web.Response:
        state.token_requests += 1
        state.token_paths[request.path] = state.token_paths.get(request.path, 0) + 1
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        form = await request.post()
        if request.headers.get("Authorization") != expected or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        issued = secrets.token_hex(8)
        state.valid_tokens.add(issued)
        return web.json_response({"client_access_token": issued, "expires_in": state.expires_in})

    async def resource(request: web.Request) -> web.Response:
        state.resource_requests += 1
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in state.valid_tokens:
            return web.Response(status=401)
        return web.Response(body=FIXTURE.read_bytes(), content_type="application/atom+xml")

    app = web.Application()
    app.router.add_post("/datacustodian/oauth/v2/token", token)
    app.router.add_post("/datacustodian/test/oauth/v2/token", token)
    app.router.add_get(RESOURCE, resource)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
    server_ssl.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    server_ssl.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no handshake
    async with serving(app, port, ssl_context=server_ssl):
        yield state, certs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_and_resource_over_mutual_tls(pge: tuple[FakePge, CertSet]) -> None:
    state, certs = pge
    context = client_ssl_context(certs.client_cert, certs.client_key, certs.ca)
    client = ShareMyDataClient(state.url, CLIENT_ID, CLIENT_SECRET, context)
    async with aiohttp.ClientSession() as session:
        body = await client.fetch(session, RESOURCE)
        await client.fetch(session, RESOURCE)
    _readings, report = parse_bytes(body)
    assert report.readings == 120
    assert state.token_requests == 1  # the token is reused while valid
    assert state.resource_requests == 2


async def test_without_client_certificate_the_server_refuses(pge: tuple[FakePge, CertSet]) -> None:
    state, certs = pge
    no_cert = ssl.create_default_context(cafile=str(certs.ca))
    client = ShareMyDataClient(state.url, CLIENT_ID, CLIENT_SECRET, no_cert)
    async with aiohttp.ClientSession() as session:
        with pytest.raises((AuthError, SourceConnectionError)):
            await client.fetch(session, RESOURCE)
    assert state.token_requests == 0  # refused in the handshake, before any HTTP


async def test_wrong_secret_is_an_auth_error(pge: tuple[FakePge, CertSet]) -> None:
    state, certs = pge
    context = client_ssl_context(certs.client_cert, certs.client_key, certs.ca)
    client = ShareMyDataClient(state.url, CLIENT_ID, "wrong", context)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AuthError):
            await client.fetch(session, RESOURCE)


async def test_expired_token_is_refreshed(pge: tuple[FakePge, CertSet]) -> None:
    state, certs = pge
    state.expires_in = 600
    clock = Clock()
    context = client_ssl_context(certs.client_cert, certs.client_key, certs.ca)
    client = ShareMyDataClient(state.url, CLIENT_ID, CLIENT_SECRET, context, clock=clock)
    async with aiohttp.ClientSession() as session:
        await client.fetch(session, RESOURCE)
        clock.now += 500  # within expires_in - margin: reused
        await client.fetch(session, RESOURCE)
        assert state.token_requests == 1
        clock.now += 100  # past expires_in - 60 s margin: a new token first
        state.valid_tokens.clear()  # and the server no longer accepts the old one
        await client.fetch(session, RESOURCE)
        assert state.token_requests == 2
        state.valid_tokens.clear()  # revoked early on the server: a 401, then one refresh
        await client.fetch(session, RESOURCE)
    assert state.token_requests == 3


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    check_key_file(certs.client_key)
    certs.client_key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        client_ssl_context(certs.client_cert, certs.client_key, certs.ca)


async def test_source_imports_from_pge_and_backs_off_on_refusal(pge: tuple[FakePge, CertSet]) -> None:
    state, certs = pge
    config = GreenButtonSourceConfig(
        type="green_button",
        id="pge_home",
        api="pge",
        base_url=state.url,
        resource_path=RESOURCE,
        subscription_id="5",
        client_id=SecretStr(CLIENT_ID),
        client_secret=SecretStr(CLIENT_SECRET),
        cert_file=certs.client_cert,
        key_file=certs.client_key,
        ca_file=certs.ca,
    )
    events: list[object] = []
    ctx = SourceContext(
        "pge_home",
        SourceStats(source_type="green_button", stale_after_s=1.0),
        events.append,
        historical=GreenButtonSource.historical,  # as the bridge builds it: the utility's own times
    )
    source = GreenButtonSource(config)
    async with aiohttp.ClientSession() as session:
        summary = await source.run_once(ctx, session)
    assert summary is not None
    readings = [e for e in events if isinstance(e, Reading)]
    # hourly totals at each hour's end: 25 import hours, 5 export hours, non-decreasing
    assert len([r for r in readings if r.quantity is Quantity.ENERGY_IMPORT]) == 25
    assert len([r for r in readings if r.quantity is Quantity.ENERGY_EXPORT]) == 5
    imports = [r.value for r in readings if r.quantity is Quantity.ENERGY_IMPORT]
    assert imports == sorted(imports)

    # refused credentials: the run loop counts the error, marks the meter down, and waits
    bad = GreenButtonSource(config.model_copy(update={"client_secret": SecretStr("wrong")}))
    task = asyncio.create_task(bad.run(ctx))
    for _ in range(1200):  # 60 s: a hang bound only
        if ctx.stats.errors["auth"]:
            break
        await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ctx.stats.errors["auth"] == 1
    assert ctx.stats.meters["pge_home"] is False


def _keygen(out: Path, *extra: str) -> int:
    return main(["pge", "keygen", "--cn", "hems.example.org", "--out", str(out), *extra])


def test_keygen_makes_a_0600_rsa_key_and_a_sha256_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _keygen(tmp_path) == 0
    key_file, csr_file = tmp_path / "pge-client.key", tmp_path / "pge-client.csr"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size >= 2048  # PG&E: RSA public key of at least 2048 bits
    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)  # PG&E: SHA-2
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hems.example.org"
    assert csr.public_key().public_numbers() == key.public_key().public_numbers()
    out = capsys.readouterr().out
    assert "BEGIN CERTIFICATE REQUEST" in out
    assert "PRIVATE KEY" not in out, "the key is never printed"
    assert "PGE_CERT" in out
    assert "PGE_KEY" in out

    # an existing key (its certificate may be registered already) is kept unless --force
    before = key_file.read_bytes()
    assert _keygen(tmp_path) == 2
    assert key_file.read_bytes() == before
    assert _keygen(tmp_path, "--bits", "1024", "--force") == 2
    assert _keygen(tmp_path, "--force") == 0
    assert key_file.read_bytes() != before


def test_base_url_with_a_path_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "mqtt: {username: bridge, password: x}\ninflux: {enabled: false, token: x}\nsources:\n"
        "  - type: green_button\n    id: pge\n    api: pge\n    base_url: https://api.pge.com/datacustodian/test\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    (problem,) = raised.value.problems
    assert problem.startswith(f"{config}:7: sources[0].base_url:")
    assert "environment: test" in problem


async def test_keygen_to_ca_to_variables_reaches_the_test_endpoint(
    pge: tuple[FakePge, CertSet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a self-access user takes: keygen, a CA signs the request, cert and key go into
    balena variables, the bridge writes them to 0600 files and passes PG&E's connectivity test."""
    state, certs = pge
    assert state.ca is not None
    assert _keygen(tmp_path / "keys") == 0
    issued = state.ca.sign_csr((tmp_path / "keys" / "pge-client.csr").read_bytes())
    monkeypatch.setenv("PGE_CERT", issued.decode())
    # pasted into a one-line field: line breaks as `\n`
    monkeypatch.setenv("PGE_KEY", (tmp_path / "keys" / "pge-client.key").read_text().replace("\n", "\\n"))
    monkeypatch.setenv("PGE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("PGE_CLIENT_SECRET", CLIENT_SECRET)
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(
        f"""mqtt: {{username: bridge, password: x}}
influx: {{enabled: false, token: x}}
sources:
  - type: green_button
    id: pge_home
    api: pge
    environment: test
    base_url: {state.url}
    resource_path: {RESOURCE}
    subscription_id: "5"
    client_id: "${{PGE_CLIENT_ID}}"
    client_secret: "${{PGE_CLIENT_SECRET}}"
    cert_pem: "${{PGE_CERT}}"
    key_pem: "${{PGE_KEY}}"
    credentials_dir: {tmp_path / "run" / "pge"}
    ca_file: {certs.ca}
"""
    )
    (config,) = load_config(config_file).sources
    assert isinstance(config, GreenButtonSourceConfig)
    events: list[object] = []
    ctx = SourceContext(
        "pge_home",
        SourceStats(source_type="green_button", stale_after_s=1.0),
        events.append,
        historical=GreenButtonSource.historical,  # as the bridge builds it: the utility's own times
    )
    async with aiohttp.ClientSession() as session:
        assert await GreenButtonSource(config).run_once(ctx, session) is not None
    assert state.token_paths == {"/datacustodian/test/oauth/v2/token": 1}, "the test endpoint, nothing else"
    assert any(isinstance(e, Reading) for e in events)
    for name in ("pge_home.crt", "pge_home.key"):
        written = tmp_path / "run" / "pge" / name
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "run" / "pge" / "pge_home.key").read_text() == (tmp_path / "keys" / "pge-client.key").read_text()


def test_pem_variables_that_are_not_pem_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"source pge\.key_pem: not a PEM private key"):
        write_pem_files(
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----", "oops", tmp_path, "pge", "source pge"
        )
    with pytest.raises(ValidationError, match="cert_pem and key_pem go together"):
        GreenButtonSourceConfig(type="green_button", id="pge", api="pge", cert_pem=SecretStr("x"))
