"""A real Home Assistant at the version the release pins, run natively for tests.

Install it once with `make setup-ha` (`make test` does it): scripts/setup-ha.sh reads the version
from services/homeassistant/Dockerfile and makes `.cache/ha/bin/hass` (HA 2026 needs Python
>= 3.14.2: on a machine without it, HA runs inside a Debian sid chroot; the wrapper binds the
`--config` directory at the same path, so everything here uses host paths). The API, all on
127.0.0.1 with a port chosen at run time:

    ha = HomeAssistant(tmp_path / "ha", mqtt=broker)   # mqtt optional (a tests.helpers Mosquitto)
    ha.start()            # writes the config, starts `hass`, waits for HTTP, onboards (blocking)
    ha.url, ha.ws_url     # http://127.0.0.1:PORT, ws://127.0.0.1:PORT/api/websocket
    ha.token              # a long-lived access token of the admin owner (user `admin`)
    ha.version            # e.g. "2026.10.4", as the websocket reports it (== PINNED_VERSION)
    await ha.rest("GET", "/api/states")          # JSON answer; AssertionError on HTTP >= 400
    async with ha.websocket() as ws:             # authenticated websocket
        result = await ws.call("recorder/statistics_during_period", start_time=..., ...)
    ha.stop()             # SIGTERM, then SIGKILL after 30 s

Fixtures (in `tests/conftest.py`): `homeassistant` (session: one HA for every test that needs
no MQTT), `homeassistant_mqtt` (session: an HA whose MQTT integration is connected to the
session `broker` as user `observer`, discovery on under prefix `homeassistant`), and
`homeassistant_factory` (per test: `ha = homeassistant_factory(mqtt=..., extra_yaml=...)` for a
test that needs its own instance, e.g. to restart it). Mark tests `@pytest.mark.homeassistant`.

The configuration is deliberately minimal (no `default_config`): `homeassistant`, `http`,
`api`, `websocket_api`, `auth`/`onboarding` (to get a token), `recorder` on SQLite with a 1 s
commit interval, and `mqtt` through a pre-seeded config entry when asked. `extra_yaml` is
appended to configuration.yaml for anything else a test needs. HA runs with `--skip-pip`:
every requirement is pre-installed by `scripts/setup-ha.sh`, so it never reaches the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .mosquitto import Mosquitto
from .net import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "services" / "homeassistant"))
import ha_onboard  # noqa: E402 - scripts/ is not a package
import hems_seed  # noqa: E402 - the release's seeding step, run by the image's own Python

HASS = REPO / ".cache" / "ha" / "bin" / "hass"
#: An older release (scripts/setup-ha-previous.sh), for the upgrade test only.
PREVIOUS_VERSION = "2024.3.3"
PREVIOUS_HASS = REPO / ".cache" / f"ha-{PREVIOUS_VERSION}" / "bin" / "hass"


def pinned_version() -> str:
    """The Home Assistant version the release's image pins (services/homeassistant/Dockerfile)."""
    dockerfile = (REPO / "services" / "homeassistant" / "Dockerfile").read_text()
    match = re.search(r"^FROM ghcr\.io/home-assistant/home-assistant:([0-9.]+)", dockerfile, re.MULTILINE)
    if match is None:
        raise RuntimeError("no pinned Home Assistant version in services/homeassistant/Dockerfile")
    return match.group(1)


PINNED_VERSION = pinned_version()
START_TIMEOUT_S = 120.0


def run_ha_python(
    args: list[str], env: dict[str, str], bind: Path, hass: Path = HASS, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `python3 ARGS` with the interpreter of the pinned HA (the image's Python: homeassistant
    and SQLAlchemy importable), as the image's entrypoint runs its steps, with only `env` set.

    Reads where that Python is from the `hass` wrapper scripts/setup-ha.sh wrote: natively its
    venv's python; in the Debian sid root the same unshare + chroot the wrapper does, with `bind`'s
    top-level directory (and the checkout's) bound at the same path, so host paths work inside.
    """
    wrapper = hass.read_text()
    native = re.search(r'^exec "(.+)/bin/hass"', wrapper, re.MULTILINE)
    settings = [f"{key}={value}" for key, value in env.items()]
    if native is not None:
        command = ["/usr/bin/env", "-i", *settings, f"{native.group(1)}/bin/python3", *args]
    else:
        root = re.search(r"^root=(.+)$", wrapper, re.MULTILINE)
        venv = re.search(r"(/opt/ha-[^/ ]+)/bin/hass", wrapper)
        if root is None or venv is None:
            raise RuntimeError(f"{hass}: cannot tell where the pinned Home Assistant's Python is")
        tops = sorted({"/" + Path(path).resolve().parts[1] for path in (bind, REPO)})
        userns = [] if os.getuid() == 0 else ["--map-root-user"]
        script = (
            'root=$1; shift; mount --rbind /proc "$root/proc"; mount --rbind /dev "$root/dev"\n'
            + "".join(f'[ -d "$root{top}" ] || mkdir "$root{top}"; mount --rbind {top} "$root{top}"\n' for top in tops)
            + 'exec chroot "$root" "$@"'
        )
        command = [
            "unshare", *userns, "--mount", "--propagation", "private", "sh", "-ec", script, "sh", root.group(1),
            "/usr/bin/env", "-i", f"PATH={venv.group(1)}/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8",
            *settings, f"{venv.group(1)}/bin/python3", *args,
        ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class HomeAssistantWebsocket:
    """An authenticated websocket connection; `call` sends a command and returns its result."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, ha_version: str) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.ha_version = ha_version

    async def call(self, command: str, timeout: float = 30.0, **payload: Any) -> Any:
        """Run `command` with `payload`; return `result`; AssertionError when HA answers an error."""
        msg_id = next(self._ids)
        await self._ws.send_json({"id": msg_id, "type": command, **payload})
        async with asyncio.timeout(timeout):
            while True:
                message = await self._ws.receive_json()
                if message.get("id") != msg_id or message.get("type") != "result":
                    continue  # events of subscriptions, pongs
                if not message.get("success"):
                    raise AssertionError(f"{command} failed: {message.get('error')}")
                return message.get("result")

    async def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next event of a subscription (`subscribe_events` first); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self._ws.receive_json()
                if message.get("type") == "event":
                    event: dict[str, Any] = message["event"]
                    return event


@dataclass
class HomeAssistant:
    """One Home Assistant process with its own config dir `workdir`."""

    workdir: Path
    mqtt: Mosquitto | None = None
    mqtt_user: str = "observer"
    extra_yaml: str = ""
    #: the `hass` to run: the pinned release's by default (PREVIOUS_HASS for the upgrade test)
    hass: Path = HASS
    #: load `packages/*.yaml` of the config dir (the release's own, after hems_seed.py installed them)
    packages: bool = False
    time_zone: str = "UTC"
    port: int = 0
    host: str = "127.0.0.1"
    token: str = ""
    version: str = ""
    process: subprocess.Popen[bytes] | None = None
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.log_file = self.workdir / "hass.log"

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """URL of the websocket API."""
        return f"ws://{self.host}:{self.port}/api/websocket"

    # --- configuration ------------------------------------------------------------

    def _write_config(self) -> None:
        (self.workdir / "configuration.yaml").write_text(
            f"""\
homeassistant:
  name: Test home
  latitude: 51.5
  longitude: -0.1
  elevation: 0
  unit_system: metric
  currency: USD
  country: US
  time_zone: {self.time_zone}
{"  packages: !include_dir_named packages" if self.packages else ""}
{self._legacy_http_yaml()}
api:
websocket_api:
auth:
onboarding:
{"" if self.packages else self._own_recorder_and_logger()}
{self.extra_yaml}
"""
        )
        # HTTP settings and the MQTT entry the way the release seeds them (hems_seed.py): HA 2026
        # stages YAML `http:` as a trial that reverts after 5 minutes, longer than a test session.
        hems_seed.seed_http_settings(
            self.workdir,
            hems_seed.http_settings({"HA_HTTP_SERVER_HOST": self.host, "HA_HTTP_SERVER_PORT": str(self.port)}),
        )
        if self.mqtt is not None:
            data = {
                "broker": self.mqtt.host,
                "port": self.mqtt.port,
                "username": self.mqtt_user,
                "password": self.mqtt.password(self.mqtt_user),
                "discovery": True,
                "discovery_prefix": "homeassistant",
            }
            hems_seed.seed_entry(self.workdir, "mqtt", self.mqtt.host, data, owned=tuple(data))

    def _legacy_http_yaml(self) -> str:
        # HA before 2026 reads the bind address and port from YAML only (its .storage/http is a
        # recovery-mode fallback); the pinned release gets them from the store alone.
        if self.hass != PREVIOUS_HASS:
            return ""
        return f"http:\n  server_host: {self.host}\n  server_port: {self.port}\n"

    def _own_recorder_and_logger(self) -> str:
        # A 1 s commit interval so tests read their rows at once; with `packages` the release's
        # package configures the recorder (HA refuses a package that repeats a key).
        return f"""\
recorder:
  db_url: sqlite:///{self.workdir / "home-assistant_v2.db"}
  commit_interval: 1
logger:
  default: warning
"""

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start HA, wait for HTTP, onboard and get a long-lived token."""
        if not self.hass.exists():
            raise RuntimeError(f"{self.hass} is missing: run `make setup-ha` (`make setup-ha-previous`) first")
        self._write_config()
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [str(self.hass), "--config", str(self.workdir), "--skip-pip", "--log-file", str(self.workdir / "ha.log")],
            stdout=log,
            stderr=log,
            cwd=self.workdir,
        )
        try:
            steps = self._wait_for_http()
            if ha_onboard.user_step_pending(steps):
                self._onboard()
            elif not self.token:
                raise RuntimeError("Home Assistant is already onboarded but this helper has no token for it")
            self.version = self._run_async(self._fetch_version())
        except BaseException:
            self.stop()
            raise

    def _wait_for_http(self) -> list[dict[str, Any]]:
        try:
            return ha_onboard.wait_for_onboarding(
                self.url, START_TIMEOUT_S, alive=lambda: self.process is not None and self.process.poll() is None
            )
        except RuntimeError as err:
            raise RuntimeError(f"{err}: {self.tail_log()}") from err

    def _onboard(self) -> None:
        # scripts/ha_onboard.py, shared with `make demo`. The other onboarding steps are
        # left pending on purpose: core_config adds integrations that reach the internet.
        access_token = ha_onboard.create_owner(self.url, "admin", self.password)
        self.token = self._run_async(ha_onboard.long_lived_token(self.url, access_token, "tests"))

    async def _fetch_version(self) -> str:
        async with self.websocket() as ws:
            return ws.ha_version

    @staticmethod
    def _run_async(coro: Any) -> Any:
        # start() is synchronous and may be called from inside a running loop (an async
        # test): run the coroutine on a loop of its own in a helper thread.
        result: list[Any] = []
        errors: list[BaseException] = []

        def runner() -> None:
            try:
                result.append(asyncio.run(coro))
            except BaseException as err:
                errors.append(err)

        thread = threading.Thread(target=runner, name="ha-onboard")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return result[0]

    def stop(self) -> None:
        """Stop HA (SIGTERM, SIGKILL after 30 s)."""
        if self.process is None:
            return
        stop_process(self.process, timeout=30)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and config dir (keeps the token)."""
        self.stop()
        self.start()

    def tail_log(self, lines: int = 40) -> str:
        """The last lines of HA's output, for error messages."""
        text = ""
        for path in (self.log_file, self.workdir / "ha.log"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # --- API helpers --------------------------------------------------------------

    async def rest(self, method: str, path: str, json_body: Any = None) -> Any:
        """Call the REST API with the token; the decoded JSON answer (text if not JSON)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.url}{path}", json=json_body, headers=headers) as response,
        ):
            text = await response.text()
            assert response.status < 400, f"{method} {path}: HTTP {response.status}: {text}"
            try:
                return json.loads(text)
            except ValueError:
                return text

    @contextlib.asynccontextmanager
    async def websocket(self) -> AsyncIterator[HomeAssistantWebsocket]:
        """An authenticated websocket connection (`await ws.call(command, **payload)`)."""
        async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url, max_msg_size=0) as ws:
            hello = await ws.receive_json()
            assert hello["type"] == "auth_required", hello
            await ws.send_json({"type": "auth", "access_token": self.token})
            answer = await ws.receive_json()
            assert answer["type"] == "auth_ok", answer
            yield HomeAssistantWebsocket(ws, str(answer["ha_version"]))

    async def hourly_statistics(self, statistic_id: str) -> list[dict[str, Any]]:
        """Every hourly long-term statistics row (`start` ms, `state`, `sum`) HA holds for `statistic_id`."""
        async with self.websocket() as ws:
            result = await ws.call(
                "recorder/statistics_during_period",
                start_time="2000-01-01T00:00:00+00:00",
                statistic_ids=[statistic_id],
                period="hour",
                types=["state", "sum"],
            )
        rows: list[dict[str, Any]] = result.get(statistic_id, [])
        return rows


async def until(check: Callable[[], Awaitable[Any]], what: str, ha: HomeAssistant, timeout: float = 60) -> Any:
    """Await `check()` every 0.3 s until it is truthy and return it; after `timeout` s fail with HA's log."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what} not reached in {timeout} s\n{ha.tail_log()}")


async def state_of(ha: HomeAssistant, entity_id: str) -> str | None:
    """The entity's state as HA's REST API gives it (None: no such entity)."""
    for item in await ha.rest("GET", "/api/states"):
        if item["entity_id"] == entity_id:
            return str(item["state"])
    return None
