"""The images whose base can be made here, built from the release's Dockerfiles as they are and
run as docker-compose.yml runs them, with podman: meter-bridge (which influx-provision also runs)
and hass-configurator.

Their base, python:3.11.11-slim-bookworm, cannot be pulled here (no container registry): `make
setup-containers` makes a stand-in with debootstrap and tags it with that name (scripts/setup-containers.sh).
It differs from the real image: Debian's Python 3.11.2 in /usr/bin, packages in dist-packages,
Debian's pip (test_the_stand_in_is_not_the_real_base pins this). The other images (Mosquitto,
Home Assistant, InfluxDB, nginx, Zigbee2MQTT, the WiFi repeater) start from Alpine or vendor
images that cannot be made here: their entrypoints run natively (tests/release, tests/e2e) and
their Dockerfiles are checked statically (test_release_lint, test_release_dockerfile_builder).

Each service runs as compose says: `privileged` and `network_mode: host` where it says so, its
named volumes as fresh root-owned directories (read-only where it says `:ro`), its environment
and command. What a test changes, and why, is in `TEST_ONLY`: the ports, because tests share the
machine's network with other tests, and influx-provision's InfluxDB, which is a contract double
(InfluxDB 2 cannot run here: helpers.influx_mgmt_double) on the host's loopback.

Outside CI the tests skip, saying why, only where podman cannot run at all; on CI they must run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import aiomqtt
import pytest
import yaml
from packaging.utils import canonicalize_name

from helpers.influx_mgmt_double import InfluxMgmtDouble
from helpers.lock import read_lock
from helpers.net import free_port
from helpers.podman import (
    STAND_IN_LABEL,
    Container,
    base_image,
    build,
    image_config,
    podman,
    why_podman_cannot_run,
)
from helpers.release import REPO, ReleaseBroker, Volumes, image_environment, mounts

BRIDGE_DOCKERFILE = REPO / "services" / "meter-bridge" / "Dockerfile"
CONFIGURATOR_DOCKERFILE = REPO / "services" / "hass-configurator" / "Dockerfile"
TAG = f"localhost/hems-test-{os.getpid()}"
METER = "podman_grid"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def podman_ready() -> None:
    """Podman runs here and the stand-in base is in its store; a skip outside CI only, with the reason."""
    reason = why_podman_cannot_run()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests: {reason}")
        pytest.skip(reason)
    for dockerfile in (BRIDGE_DOCKERFILE, CONFIGURATOR_DOCKERFILE):
        base = base_image(dockerfile)
        found = podman("image", "exists", base, check=False)
        assert found.returncode == 0, f"no {base} in podman's store: `make setup-containers` makes the stand-in"


@pytest.fixture(scope="module")
def bridge_image(podman_ready: None) -> Iterator[str]:
    """meter-bridge built from services/meter-bridge/Dockerfile, context services/ (as compose says)."""
    tag = f"{TAG}/meter-bridge"
    build(BRIDGE_DOCKERFILE, REPO / "services", tag)
    yield tag
    podman("rmi", "--force", tag, check=False)


@pytest.fixture(scope="module")
def configurator_image(podman_ready: None) -> Iterator[str]:
    """hass-configurator built from services/hass-configurator/Dockerfile."""
    tag = f"{TAG}/hass-configurator"
    build(CONFIGURATOR_DOCKERFILE, REPO / "services" / "hass-configurator", tag)
    yield tag
    podman("rmi", "--force", tag, check=False)


def as_compose_runs(
    compose: dict[str, Any],
    service: str,
    image: str,
    volumes: Volumes,
    test_only: dict[str, str],
    shared: Mapping[str, Path] | None = None,
) -> Container:
    """`service` of docker-compose.yml as a podman container: privileged, host network, named
    volumes (fresh directories of `volumes`, or the `shared` one of that name that a natively run
    service fills), environment and command as the file says; `test_only` variables on top (each
    one explained where it is made)."""
    spec = compose["services"][service]
    return Container(
        image=image,
        name=f"hems-test-{os.getpid()}-{service}",
        volumes={
            (shared or {}).get(mount.volume, mount.path): mount.target + (":ro" if mount.read_only else "")
            for mount in mounts(compose, service, volumes)
        },
        environment={**{k: str(v) for k, v in spec.get("environment", {}).items()}, **test_only},
        command=[str(arg) for arg in spec.get("command", [])],
        privileged=bool(spec.get("privileged", False)),
        host_network=spec.get("network_mode") == "host",
    )


def test_every_image_on_the_python_base_is_built_here() -> None:
    """The images whose base the stand-in replaces are the ones these tests build (no podman needed)."""
    on_python = {
        path.relative_to(REPO).as_posix()
        for path in REPO.glob("**/Dockerfile")
        if not any(part.startswith(".") for part in path.relative_to(REPO).parts)
        and base_image(path).startswith("python:")
    }
    assert on_python == {"services/meter-bridge/Dockerfile", "services/hass-configurator/Dockerfile"}
    assert base_image(BRIDGE_DOCKERFILE) == base_image(CONFIGURATOR_DOCKERFILE), "one stand-in for both"


def test_the_stand_in_is_not_the_real_base(bridge_image: str) -> None:
    """What the stand-in base is, so that nobody takes these tests for a run of the real image:
    Debian's Python (3.11.2, not python.org's 3.11.11) with packages in dist-packages."""
    assert image_config(bridge_image)["Labels"][STAND_IN_LABEL]  # type: ignore[index]
    probe = podman(
        "run", "--rm", "--entrypoint", "python3", bridge_image, "-c",
        "import sys, meterbridge; print(sys.version.split()[0]); print(meterbridge.__file__)",
    )  # fmt: skip
    version, location = probe.stdout.split()
    assert version == "3.11.2"
    assert "/dist-packages/" in location


def test_the_bridge_image_keeps_its_healthcheck(bridge_image: str) -> None:
    """`--format docker`: the OCI format would drop HEALTHCHECK (and balena's builder keeps it)."""
    health = image_config(bridge_image)["Healthcheck"]
    assert health["Test"] == ["CMD", "meter-bridge", "status", "--live"]


def test_the_image_installs_exactly_the_lock(bridge_image: str) -> None:
    """Every runtime dependency in the image is the lock's version (pip's own list, in the image)."""
    listed = podman("run", "--rm", "--entrypoint", "python3", bridge_image, "-m", "pip", "list", "--format", "json")
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    assert installed.pop("meterbridge") == "0.1.0"
    # CPython 3.11 on Linux, as on this machine: the lock's markers evaluate the same here
    wanted = {name: str(pin.version) for name, pin in read_lock().items() if pin.requirement.marker is None
              or pin.requirement.marker.evaluate()}  # fmt: skip
    assert {name: installed.get(name) for name in wanted} == wanted


@dataclass
class RunningBridge:
    """The meter-bridge container as compose runs it, its broker and its volumes."""

    container: Container
    broker: ReleaseBroker
    data: Path


@pytest.fixture(scope="module")
def running_bridge(
    bridge_image: str, compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningBridge]:
    """The bridge on the release's broker (the mqtt entrypoint run natively), with one simulated
    meter set as an operator sets it (the BRIDGE_CONFIG variable: the default config plus a source)."""
    root = tmp_path_factory.mktemp("bridge-container")
    broker = ReleaseBroker(root / "mqtt")
    broker.start()
    volumes = Volumes(root)
    tokens = volumes("influx-tokens-bridge")
    # as influx-provision leaves it (its own test is below): otherwise the bridge waits
    # INFLUX_WAIT_S (300 s) for the token before it starts
    (tokens / "bridge.token").write_text("token-from-influx-provision")
    default = (REPO / "services" / "meter-bridge" / "default-config.yaml").read_text()
    assert "sources: []" in default
    config = default.replace("sources: []", f"sources:\n  - {{type: simulated, id: {METER}, interval_s: 1}}")
    container = as_compose_runs(
        compose,
        "meter-bridge",
        bridge_image,
        volumes,
        test_only={
            # the broker and the health endpoint on ports free on this shared machine (the device
            # uses the image's 1883 and 8099)
            "MQTT_PORT": str(broker.port),
            "BRIDGE_HEALTH_PORT": str(free_port()),
            "BRIDGE_CONFIG": config,
        },
        # the volumes the broker's entrypoint writes and reads
        shared={"mqtt-creds-bridge": broker.share / "bridge", "shelly-identities": broker.identities},
    )
    assert container.privileged, "as compose runs the bridge"
    assert container.host_network, "as compose runs the bridge"
    container.start()
    try:
        health = container.wait_healthy(timeout=120)  # a hang bound: the image's start period is 60 s
        assert health.returncode == 0, f"{health.stdout}{health.stderr}\n{container.logs()}"
        yield RunningBridge(container, broker, volumes("bridge-data"))
    finally:
        container.remove()
        broker.stop()


def test_the_bridge_healthcheck_passes(running_bridge: RunningBridge) -> None:
    container = running_bridge.container
    result = container.healthcheck()
    assert result.returncode == 0, result.stdout + result.stderr
    assert podman("inspect", "--format", "{{.State.Health.Status}}", container.name).stdout.strip() == "healthy"


async def test_the_bridge_reaches_the_broker_and_home_assistant_discovery(running_bridge: RunningBridge) -> None:
    """As Home Assistant sees it (user `homeassistant` on the release's broker): the bridge is
    online, announces the meter under homeassistant/+/hems/# and publishes its readings."""
    broker = running_bridge.broker
    wanted = {
        "hems/bridge/availability",
        f"homeassistant/sensor/hems/hems_{METER}_power/config",
        f"hems/meter/{METER}",
    }
    seen: dict[str, bytes] = {}
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username="homeassistant", password=broker.password("homeassistant")
    ) as home_assistant:
        for topic in ("hems/bridge/availability", "homeassistant/+/hems/#", f"hems/meter/{METER}"):
            await home_assistant.subscribe(topic, qos=1)
        async with asyncio.timeout(60):  # a hang bound: everything here is retained
            async for message in home_assistant.messages:
                seen[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]
                if wanted <= seen.keys():
                    break
    assert seen["hems/bridge/availability"] == b"online"
    discovery = json.loads(seen[f"homeassistant/sensor/hems/hems_{METER}_power/config"])
    assert discovery["unique_id"] == f"hems_home_{METER}_power"
    assert discovery["state_topic"] == f"hems/meter/{METER}"
    assert "power" in json.loads(seen[f"hems/meter/{METER}"])


def proc_status(container: Container, pid: str) -> dict[str, str]:
    """/proc/PID/status inside the container, as a dict."""
    result = container.exec("cat", f"/proc/{pid}/status")
    assert result.returncode == 0, result.stderr
    return dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)


def test_the_bridge_runs_as_bridge_without_capabilities(running_bridge: RunningBridge) -> None:
    """The container is privileged (USB hot-plug), the bridge process is not: user `bridge`, every
    capability set empty, no way back (no_new_privs). PID 1 is the bridge: the entrypoint execs it."""
    container = running_bridge.container
    status = proc_status(container, "1")
    assert status["Name"].strip() == "meter-bridge"
    uid = container.exec("id", "-u", "bridge").stdout.strip()
    assert uid.isdigit()
    assert uid != "0"
    assert status["Uid"].split() == [uid] * 4
    assert status["Gid"].split()[0] != "0"
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, f"{capabilities}: {status[capabilities]}"
    assert status["NoNewPrivs"].strip() == "1"
    # the operator's exec, by contrast, is root with the privileged container's capabilities
    assert int(proc_status(container, "self")["CapEff"], 16) != 0


def test_meter_bridge_status_as_an_operator_runs_it(running_bridge: RunningBridge) -> None:
    """`balena device ssh <uuid> meter-bridge` then `meter-bridge status`: the container's environment,
    none of the entrypoint's (no MQTT password), the config the entrypoint wrote."""
    result = running_bridge.container.exec("meter-bridge", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "healthy" in result.stdout
    assert METER in result.stdout
    written = running_bridge.data / "config.yaml"
    assert f"id: {METER}" in written.read_text()
    uid = int(running_bridge.container.exec("id", "-u", "bridge").stdout)
    assert written.stat().st_uid == uid, "the entrypoint hands the data volume to `bridge`"


async def test_influx_provision_issues_the_tokens(bridge_image: str, compose: dict[str, Any], tmp_path: Path) -> None:
    """influx-provision as the release runs it: the meter-bridge image, compose's command (one pass
    instead of `--every 3600`), the admin token as the influxdb service's entrypoint
    (influx/entrypoint-hems.sh, run natively as root) leaves it in the influx-secrets volume,
    mounted read-only, and the token volumes fresh and root-owned. InfluxDB 2 is a CONTRACT
    DOUBLE of its management API (helpers.influx_mgmt_double): it cannot run here. Compose puts
    influx-provision on the default network, where it reaches `http://influxdb:8086`; here it
    shares the host's network to reach the double on loopback."""
    volumes = Volumes(tmp_path)
    secrets = volumes("influx-secrets")
    # the influxdb service's entrypoint, with its image's ENV, writes the secrets; then it would exec
    # the official image's /entrypoint.sh (InfluxDB itself: not here, `true` stands in)
    influxdb_env = image_environment(REPO / "influx" / "Dockerfile")
    hems_entrypoint = subprocess.run(
        ["bash", str(REPO / "influx" / "entrypoint-hems.sh")],
        env={**influxdb_env, "PATH": os.environ["PATH"], "INFLUX_SECRETS_DIR": str(secrets),
             "INFLUXDB_ENTRYPOINT": "true"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert hems_entrypoint.returncode == 0, hems_entrypoint.stderr
    admin_token = (secrets / "admin.token").read_text()
    double = InfluxMgmtDouble(admin_token=admin_token)
    await double.start()
    try:
        container = as_compose_runs(
            compose, "influx-provision", bridge_image, volumes, test_only={"INFLUX_URL": double.url}
        )
        assert container.command[:2] == ["influx", "provision"]
        container.command = [arg for arg in container.command if arg not in ("--every", "3600")]
        container.host_network = True
        # podman runs in a thread: this event loop serves the double meanwhile
        result = await asyncio.to_thread(container.run_once, 240)  # a hang bound
    finally:
        await double.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    issued = {auth["description"].removeprefix("hems:"): auth["token"] for auth in double.authorizations.values()}
    # each consumer's token where that consumer's container finds it: in the volume it mounts at
    # /influx-tokens (the bridge's INFLUX_TOKEN_FILE, Home Assistant's seeding step)
    for service, token in (("meter-bridge", "bridge"), ("homeassistant", "homeassistant")):
        mount = next(m for m in mounts(compose, service, volumes) if m.target == "/influx-tokens")
        assert (mount.path / f"{token}.token").read_text().strip() == issued[token], service


def test_hass_configurator_serves_and_edits_the_config_volume(
    configurator_image: str, compose: dict[str, Any], tmp_path: Path
) -> None:
    """hass-configurator as compose runs it (host network, the ha-config volume): its HEALTHCHECK
    passes and a save through its API lands in the volume, which belongs to root (the image runs
    as root: Home Assistant's /config is root's). It listens on the image's 127.0.0.1:3218, which
    its HEALTHCHECK names: a port this test cannot move."""
    volumes = Volumes(tmp_path)
    config = volumes("ha-config")
    (config / "configuration.yaml").write_text("default_config:\n")
    container = as_compose_runs(compose, "hass-configurator", configurator_image, volumes, {})
    assert container.host_network
    assert not container.privileged
    container.start()
    try:
        health = container.wait_healthy(timeout=90)  # a hang bound
        assert health.returncode == 0, f"{health.stdout}{health.stderr}\n{container.logs()}"
        saved = "default_config:\nmqtt: {}\n"
        form = urlencode({"filename": "/config/configuration.yaml", "text": saved}).encode()
        with urlopen("http://127.0.0.1:3218/api/save", data=form, timeout=10) as response:
            assert json.loads(response.read())["error"] is False
    finally:
        container.remove()
    assert (config / "configuration.yaml").read_text() == saved
    assert yaml.safe_load(saved) == {"default_config": None, "mqtt": {}}
