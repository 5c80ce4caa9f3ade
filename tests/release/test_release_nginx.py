"""The nginx entrypoint, run natively: certificate (openssl), htpasswd, rendered config that
`nginx -t` accepts; then real nginx serving it: HTTP -> HTTPS, security headers, basic auth on
/configurator/ and /influxdb/, Home Assistant's websocket. The upstreams are small aiohttp
servers standing in for Home Assistant, hass-configurator and InfluxDB: what is under test is
nginx's behaviour in front of them."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from helpers.image_users import image_users
from helpers.net import free_port, stop_process, wait_for_port
from helpers.release import REPO, traversable

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ENTRYPOINT = REPO / "nginx" / "entrypoint.sh"
#: the image's `nginx` user as test machines name it (scripts/image-users.tsv)
NGINX_USER = image_users()["nginx"].test_name
pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx not installed (make setup installs it)")


def environment(root: Path, **variables: str) -> dict[str, str]:
    """The image's ENV pointed at `root`, plus the operator's variables."""
    return {
        "PATH": os.environ["PATH"],
        "NGINX_TEMPLATE": str(REPO / "nginx" / "nginx.conf.template"),
        "NGINX_CONF_FILE": str(root / "nginx.conf"),
        # what the workers (the image's `nginx`, 101:101) read must be reachable by them
        "NGINX_DATA_DIR": str(traversable(root, "data")),
        "NGINX_RUN_DIR": str(traversable(root, "run")),
        "NGINX_RUN_USER": NGINX_USER,
        "NGINX_MIME_TYPES": "/etc/nginx/mime.types",
        "NGINX_LISTEN_ADDRESS": "127.0.0.1",
        "NGINX_HTTP_PORT": variables.pop("http_port", str(free_port())),
        "NGINX_HTTPS_PORT": variables.pop("https_port", str(free_port())),
        "NGINX_BIN": NGINX,
        "TLS_HOSTNAME": "hems-test",
        **variables,
    }


def render(root: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run the entrypoint with --render-only."""
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "--render-only"],
        env=environment(root, **variables),
        capture_output=True,
        text=True,
        timeout=60,
    )


def nginx_t(root: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the rendered config."""
    return subprocess.run(
        [NGINX, "-t", "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    result = render(tmp_path)
    assert result.returncode == 0, result.stderr
    check = nginx_t(tmp_path)
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr
    config = (tmp_path / "nginx.conf").read_text()
    assert "@@" not in config
    assert "client_max_body_size 16g" in config
    assert "ssl http2" in config


def test_certificate_for_the_device_name_made_once(tmp_path: Path) -> None:
    assert render(tmp_path).returncode == 0
    cert = tmp_path / "data" / "tls" / "cert.pem"
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"], capture_output=True, text=True, check=True
    ).stdout
    assert "DNS:hems-test" in text
    assert "DNS:hems-test.local" in text
    assert "CN = hems-test" in text or "CN=hems-test" in text
    before = cert.read_bytes()
    assert render(tmp_path).returncode == 0
    assert cert.read_bytes() == before, "kept across restarts"
    assert render(tmp_path, TLS_HOSTNAME="renamed").returncode == 0
    assert cert.read_bytes() != before, "made again for a new name"
    assert oct((tmp_path / "data" / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"


def htpasswd_matches(root: Path, user: str, password: str) -> bool:
    """Whether the rendered htpasswd accepts `user`/`password` (re-hashed with its salt)."""
    line = (root / "data" / "htpasswd").read_text().strip()
    name, hashed = line.split(":", 1)
    salt = hashed.split("$")[2]
    again = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password, capture_output=True, text=True
    ).stdout.strip()
    return name == user and again == hashed


def test_htpasswd_from_variables(tmp_path: Path) -> None:
    result = render(tmp_path, PROXY_ADMIN_USER="operator", PROXY_ADMIN_PASSWORD="correct horse battery")
    assert result.returncode == 0, result.stderr
    assert htpasswd_matches(tmp_path, "operator", "correct horse battery")
    assert not htpasswd_matches(tmp_path, "operator", "wrong")
    assert "correct horse battery" not in result.stderr
    assert not (tmp_path / "data" / "admin-password").exists()


def test_generated_admin_password_is_kept(tmp_path: Path) -> None:
    assert render(tmp_path).returncode == 0
    generated = (tmp_path / "data" / "admin-password").read_text()
    assert len(generated) == 24
    assert htpasswd_matches(tmp_path, "admin", generated)
    assert render(tmp_path).returncode == 0
    assert (tmp_path / "data" / "admin-password").read_text() == generated


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"PROXY_ADMIN_PASSWORD": "short"}, "shorter than 12"),
        ({"PROXY_ADMIN_USER": "a:b", "PROXY_ADMIN_PASSWORD": "long enough password"}, "PROXY_ADMIN_USER"),
        ({"TLS_CERT": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----"}, "TLS_CERT and TLS_KEY"),
        ({"TLS_HOSTNAME": "bad name;"}, "not a DNS name"),
    ],
)
def test_refuses_bad_variables(tmp_path: Path, variables: dict[str, str], message: str) -> None:
    result = render(tmp_path, **variables)
    assert result.returncode == 2
    assert message in result.stderr


def make_cert(root: Path, name: str) -> tuple[str, str]:
    """An operator's certificate and key (PEM)."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
            *("-days", "30", "-subj", f"/CN={name}", "-keyout", str(root / "k.pem"), "-out", str(root / "c.pem")),
        ],
        capture_output=True,
        check=True,
    )
    return (root / "c.pem").read_text(), (root / "k.pem").read_text()


def test_operator_certificate(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path / "op", "hems.example.org")
    result = render(tmp_path, TLS_CERT=cert, TLS_KEY=key)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "tls" / "cert.pem").read_text().strip() == cert.strip()
    assert nginx_t(tmp_path).returncode == 0
    _, other_key = make_cert(tmp_path / "other", "other")
    mismatch = render(tmp_path, TLS_CERT=cert, TLS_KEY=other_key)
    assert mismatch.returncode == 2
    assert "does not belong" in mismatch.stderr


def basic(user: str, password: str) -> dict[str, str]:
    """An HTTP basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    """One aiohttp server standing in for all three upstreams: echoes what it received as JSON,
    and echoes websocket messages on /api/websocket."""
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        if request.path in ("/api/websocket", "/zigbee2mqtt/api"):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                await ws.send_str(f"echo:{message.data}")
            return ws
        seen.append({"path": request.path_qs, **{k.lower(): v for k, v in request.headers.items()}})
        return web.json_response(seen[-1])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, seen
    await runner.cleanup()


def workers_uids(master: int) -> set[int]:
    """The real uids of `master`'s child processes (from /proc)."""
    uids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # gone meanwhile
        if int(fields["PPid"]) == master:
            uids.add(int(fields["Uid"].split()[0]))
    return uids


@contextlib.contextmanager
def proxy_in_front_of(tmp_path: Path, upstream_port: int) -> Iterator[tuple[int, int]]:
    """Real nginx through its entrypoint, every upstream at `upstream_port`: (http, https) ports."""
    http_port, https_port = free_port(), free_port()
    env = environment(
        tmp_path,
        http_port=str(http_port),
        https_port=str(https_port),
        PROXY_ADMIN_PASSWORD="correct horse battery",
        NGINX_UPSTREAM_HOMEASSISTANT=f"127.0.0.1:{upstream_port}",
        NGINX_UPSTREAM_CONFIGURATOR=f"127.0.0.1:{upstream_port}",
        NGINX_UPSTREAM_INFLUXDB=f"127.0.0.1:{upstream_port}",
        NGINX_UPSTREAM_ZIGBEE2MQTT=f"127.0.0.1:{upstream_port}",
    )
    with (tmp_path / "nginx.log").open("wb") as log:
        process = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=log, stderr=log)
        try:
            wait_for_port(https_port)
            wait_for_port(http_port)
            if os.geteuid() == 0:
                # the master stays root (ports, the key); the workers are the image's `nginx`
                assert workers_uids(process.pid) == {image_users()["nginx"].uid}, (tmp_path / "nginx.log").read_text()
            yield http_port, https_port
        finally:
            stop_process(process)


async def test_live_proxy(tmp_path: Path, upstream: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = upstream
    with proxy_in_front_of(tmp_path, port) as (http_port, https_port):
        base = f"https://127.0.0.1:{https_port}"
        auth = basic("admin", "correct horse battery")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
            async with session.get(f"http://127.0.0.1:{http_port}/lovelace?x=1", allow_redirects=False) as r:
                assert r.status == 301
                assert r.headers["Location"] == f"https://127.0.0.1:{https_port}/lovelace?x=1"
            async with session.get(f"{base}/nginx-health") as r:
                assert r.status == 200
                assert r.headers["Strict-Transport-Security"].startswith("max-age=")
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["X-Frame-Options"] == "SAMEORIGIN"
                assert "nginx/" not in r.headers.get("Server", "")
            async with session.get(f"{base}/api/states") as r:
                assert r.status == 200
                echoed = await r.json()
                assert echoed["x-forwarded-proto"] == "https"
                assert echoed["x-forwarded-for"] == "127.0.0.1"
            async with session.ws_connect(f"{base}/api/websocket") as ws:
                await ws.send_str("hello")
                assert (await ws.receive_str()) == "echo:hello"
            for path in ("/configurator/", "/influxdb/api/v2/buckets"):
                async with session.get(base + path) as r:
                    assert r.status == 401, path
                async with session.get(base + path, headers=basic("admin", "wrong")) as r:
                    assert r.status == 401, path
            async with session.get(f"{base}/configurator/api/files", headers=auth) as r:
                assert r.status == 200
                echoed = await r.json()
                assert echoed["path"] == "/api/files"
                assert "authorization" not in echoed, "our credentials are not passed on"
            async with session.get(
                f"{base}/influxdb/api/v2/buckets", headers={**auth, "X-Influx-Token": "tok123"}
            ) as r:
                assert r.status == 200
                echoed = await r.json()
                assert echoed["path"] == "/api/v2/buckets"
                assert echoed["authorization"] == "Token tok123"
            # Zigbee2MQTT's UI: behind the admin login, path unchanged (its base_url), websocket API
            async with session.get(f"{base}/zigbee2mqtt/") as r:
                assert r.status == 401
            async with session.get(f"{base}/zigbee2mqtt/index.html", headers=auth) as r:
                assert r.status == 200
                echoed = await r.json()
                assert echoed["path"] == "/zigbee2mqtt/index.html"
                assert "authorization" not in echoed
            async with session.ws_connect(f"{base}/zigbee2mqtt/api", headers=auth) as ws:
                await ws.send_str("z2m")
                assert (await ws.receive_str()) == "echo:z2m"
        assert len(seen) == 4
    assert json.dumps(seen)  # the upstream saw exactly the four authorised/plain requests


async def test_public_device_url_reaches_home_assistant_on_port_80(
    tmp_path: Path, upstream: tuple[int, list[dict[str, str]]]
) -> None:
    """balenaCloud forwards the Public Device URL, TLS already terminated, to port 80 with Host
    <uuid>.balena-devices.com: Home Assistant (websocket too), no redirect loop, no admin surface;
    the LAN's port 80 still redirects to https."""
    port, seen = upstream
    public = {"Host": "4f9c1e2a7b3d4c5e8f9a0b1c2d3e4f5a.balena-devices.com", "X-Forwarded-For": "198.51.100.7"}
    with proxy_in_front_of(tmp_path, port) as (http_port, https_port):
        plain = f"http://127.0.0.1:{http_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{plain}/lovelace/0", headers=public, allow_redirects=False) as r:
                assert r.status == 200, "proxied, not redirected"
                echoed = await r.json()
                assert echoed["path"] == "/lovelace/0"
                assert echoed["host"] == public["Host"]
                assert echoed["x-forwarded-proto"] == "https", "the browser's side was https (balena's TLS)"
                assert echoed["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
            async with session.ws_connect(f"{plain}/api/websocket", headers=public) as ws:
                await ws.send_str("remote")
                assert (await ws.receive_str()) == "echo:remote"
            # no admin surface: no login asked, the path unchanged (those locations strip or guard it)
            for path in ("/configurator/", "/influxdb/api/v2/buckets", "/zigbee2mqtt/"):
                async with session.get(plain + path, headers=public, allow_redirects=False) as r:
                    assert r.status == 200
                    assert (await r.json())["path"] == path, "all of it goes to Home Assistant"
            async with session.get(f"{plain}/lovelace/0", headers={"Host": "hems.local"}, allow_redirects=False) as r:
                assert r.status == 301
                assert r.headers["Location"] == f"https://hems.local:{https_port}/lovelace/0"
            async with session.get(
                f"{plain}/", headers={"Host": "balena-devices.com.evil.example"}, allow_redirects=False
            ) as r:
                assert r.status == 301, "only the balena-devices.com domain itself"
    assert [entry["path"] for entry in seen] == [
        "/lovelace/0",
        "/configurator/",
        "/influxdb/api/v2/buckets",
        "/zigbee2mqtt/",
    ]


def configurator_environment(config_dir: Path, port: int) -> dict[str, str]:
    """The hass-configurator image's HC_ settings (its Dockerfile's ENV), at `config_dir` and `port`."""
    text = (REPO / "services" / "hass-configurator" / "Dockerfile").read_text().replace("\\\n", " ")
    settings = dict(re.findall(r"\b(HC_[A-Z_]+)=(\S+)", "\n".join(re.findall(r"^ENV\s+(.*)$", text, flags=re.M))))
    assert settings["HC_BASEPATH"] == "/config"
    # no Home Assistant here: the UI would call its API for the entity lists
    return {
        **settings,
        "PATH": os.environ["PATH"],
        "HC_BASEPATH": str(config_dir),
        "HC_PORT": str(port),
        "HC_HASS_API": "none",
    }


@contextlib.contextmanager
def configurator_behind_nginx(tmp_path: Path, config_dir: Path) -> Iterator[str]:
    """The real hass-configurator (the image's pin and settings) behind the release's nginx;
    yields the https base URL of /configurator/ (user admin, password "correct horse battery")."""
    configurator_port, http_port, https_port = free_port(), free_port(), free_port()
    configurator_bin = Path(sys.executable).parent / "hass-configurator"
    hc_log = (tmp_path / "configurator.log").open("wb")
    configurator = subprocess.Popen(
        [str(configurator_bin)],
        env=configurator_environment(config_dir, configurator_port),
        stdout=hc_log,
        stderr=hc_log,
    )
    env = environment(
        tmp_path / "nginx",
        http_port=str(http_port),
        https_port=str(https_port),
        PROXY_ADMIN_PASSWORD="correct horse battery",
        NGINX_UPSTREAM_CONFIGURATOR=f"127.0.0.1:{configurator_port}",
    )
    log = (tmp_path / "nginx.log").open("wb")
    proxy = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=log, stderr=log)
    try:
        wait_for_port(configurator_port)
        wait_for_port(https_port)
        yield f"https://127.0.0.1:{https_port}/configurator/"
    finally:
        stop_process(proxy)
        stop_process(configurator)
        log.close()
        hc_log.close()


ADMIN = basic("admin", "correct horse battery")


async def test_real_hass_configurator_behind_nginx(tmp_path: Path) -> None:
    """hass-configurator 0.7.0 (the image's pin) under /configurator/, set up with the image's
    HC_ variables: its relative API URLs work below the sub-path, and only through nginx's auth."""
    config_dir = tmp_path / "ha"
    config_dir.mkdir()
    (config_dir / "configuration.yaml").write_text("default_config:\n")
    with configurator_behind_nginx(tmp_path, config_dir) as base:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
            async with session.get(base) as r:
                assert r.status == 401
            async with session.get(base, headers=ADMIN) as r:
                assert r.status == 200
                page = await r.text()
                assert '"api/listdir' in page, "the UI calls its API relative to the sub-path"
            async with session.get(f"{base}api/listdir?path={config_dir}", headers=ADMIN) as r:
                assert r.status == 200
                listing = await r.json(content_type=None)
                assert "configuration.yaml" in json.dumps(listing)
            async with session.get(base.rstrip("/"), headers=ADMIN) as r:
                assert r.status == 200, "no trailing slash: redirected below the sub-path"


async def test_real_hass_configurator_keeps_home_assistants_secrets(tmp_path: Path) -> None:
    """The editor still lists, reads and saves Home Assistant's YAML (secrets.yaml, the user's own,
    included), but nothing under a dot-folder (.storage holds the MQTT password and tokens), by no
    encoding of the path the configurator decodes, and none of the endpoints that could reveal
    one through a request body nginx cannot read (exec_command runs a shell command as root,
    rename moves a file). Real hass-configurator 0.7.0 with the image's settings, real nginx."""
    marker = "mqtt-password-that-must-not-leak"
    config_dir = tmp_path / "ha"
    (config_dir / ".storage").mkdir(parents=True)
    (config_dir / ".storage" / "core.config_entries").write_text(json.dumps({"password": marker}))
    (config_dir / ".hems").mkdir()
    (config_dir / ".hems" / "secrets.json").write_text(json.dumps({"mqtt": marker}))
    (config_dir / "packages").mkdir()
    (config_dir / "packages" / "hems.yaml").write_text("sensor: []\n")
    (config_dir / "configuration.yaml").write_text("default_config:\n")
    (config_dir / "secrets.yaml").write_text("wifi: the user's own\n")
    storage = f"{config_dir}/.storage/core.config_entries"
    secret_reads = [
        f"api/file?filename={storage}",
        f"api/download?filename={storage}",
        f"api/listdir?path={config_dir}/.storage",
        f"api/file?filename={config_dir}/.hems/secrets.json",
        f"api/file?filename={config_dir}/packages/../.storage/core.config_entries",
        f"api/file?filename={config_dir}/%2Estorage/core.config_entries",
        f"api/file?filename={config_dir}/%252estorage/core.config_entries",
        f"api/file?filename={config_dir}/%25%32%65storage/core.config_entries",
        f"api/file?filename={config_dir}%2F.storage%2Fcore.config_entries",
        f"api/file?filename={config_dir}%252F%252Estorage%252Fcore.config_entries",
        f"api/file?filename={config_dir}/packages/%2e%2e/%2estorage/core.config_entries",
        f"x/api/file?filename={storage}",
    ]
    with configurator_behind_nginx(tmp_path, config_dir) as base:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
            # still an editor: the YAML is listed, read and saved
            async with session.get(f"{base}api/listdir?path={config_dir}", headers=ADMIN) as r:
                assert r.status == 200
                names = {entry["name"] for entry in (await r.json(content_type=None))["content"]}
            assert names == {"configuration.yaml", "packages", "secrets.yaml"}, "dot-folders hidden"
            for name in ("configuration.yaml", "packages/hems.yaml", "secrets.yaml"):
                async with session.get(f"{base}api/file?filename={config_dir}/{name}", headers=ADMIN) as r:
                    assert r.status == 200
                    assert (await r.text()) == (config_dir / name).read_text(), name
            saved = "default_config:\nmqtt: {}\n"
            form = {"filename": f"{config_dir}/configuration.yaml", "text": saved}
            async with session.post(f"{base}api/save", data=form, headers=ADMIN) as r:
                assert r.status == 200
                assert not (await r.json(content_type=None))["error"]
            assert (config_dir / "configuration.yaml").read_text() == saved
            # never the secrets
            for path in secret_reads:
                async with session.get(base + path, headers=ADMIN) as r:
                    body = await r.text()
                    assert marker not in body, path
                    assert r.status == 403, path
            for endpoint, form in (
                ("api/exec_command", {"command": f"cat {storage}"}),
                ("api/exec_command;x", {"command": f"cat {storage}"}),
                ("x/api/exec_command", {"command": f"cat {storage}"}),
                ("api/rename", {"src": storage, "dstfilename": "../leak.yaml"}),
                ("api/allowed_networks", {"network": "0.0.0.0/0", "method": "add"}),
            ):
                async with session.post(base + endpoint, data=form, headers=ADMIN) as r:
                    assert marker not in await r.text(), endpoint
                    assert r.status == 403, endpoint
    assert (config_dir / ".storage" / "core.config_entries").exists(), "not moved"
    assert not (config_dir / "leak.yaml").exists()
