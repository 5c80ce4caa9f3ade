"""InfluxDB's tokens as a device hands them out (issue 24): the influxdb entrypoint makes the admin
token, influx-provision (the meter-bridge image, dropping to `bridge`) reads it and issues the
scoped tokens, and each consumer sees its own token and no other. Every service runs through its
entrypoint as root with its image's environment (Dockerfile ENV + compose `environment`), every
named volume is a fresh root-owned directory, mounted where compose mounts it and read-only where
compose says `:ro` (helpers.release).

Two parts cannot run here and are stand-ins that say so: InfluxDB 2 itself (its image's
entrypoint: helpers/influxdb_entrypoint_standin.sh; its management API: the CONTRACT DOUBLE
helpers.influx_mgmt_double)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import image_users
from helpers.influx_mgmt_double import InfluxMgmtDouble
from helpers.release import REPO, Volumes, image_environment, mounts, read_only, relocate

BRIDGE_DIR = REPO / "services" / "meter-bridge"
STANDIN = REPO / "tests" / "helpers" / "influxdb_entrypoint_standin.sh"
VENV_BIN = Path(sys.executable).parent
FLEET_TOKEN = "fleet-chosen-admin-token-0123456789"


def service_environment(compose: dict[str, Any], service: str, dockerfile: Path, volumes: Volumes) -> dict[str, str]:
    """The service's environment as its container gets it, paths moved to this machine."""
    env = {
        **image_environment(dockerfile),
        **{k: str(v) for k, v in (compose["services"][service].get("environment") or {}).items()},
    }
    return relocate(env, mounts(compose, service, volumes), volumes(f"{service}.image"))


def boot_influxdb(compose: dict[str, Any], volumes: Volumes, **variables: str) -> subprocess.CompletedProcess[str]:
    """One start of the influxdb service; its command (the stand-in for influxd, run as the image's
    influxdb user) prints every secret it can read."""
    env = service_environment(compose, "influxdb", REPO / "influx" / "Dockerfile", volumes)
    initdb = volumes("influxdb.image") / "docker-entrypoint-initdb.d"
    if not initdb.exists():
        # what the image copies there, with the mode its Dockerfile gives
        shutil.copytree(REPO / "influx" / "initdb", initdb)
        for script in initdb.iterdir():
            script.chmod(0o755)
    data = next(m.path for m in mounts(compose, "influxdb", volumes) if m.target == "/var/lib/influxdb2")
    secrets = Path(env["INFLUX_SECRETS_DIR"])
    env.update(
        PATH=os.environ["PATH"],
        INFLUXDB_ENTRYPOINT=str(STANDIN),
        INFLUXD_BOLT_PATH=str(data / "influxd.bolt"),
        STANDIN_INITDB_DIR=str(initdb),
        **variables,
    )
    influxd = ["sh", "-c", 'for f; do cat "$f" >/dev/null 2>&1 && echo "influxd read $f"; done; exit 0', "sh",
               str(secrets / "admin.token"), str(secrets / "admin.password")]  # fmt: skip
    argv = read_only(["bash", str(REPO / "influx" / "entrypoint-hems.sh"), *influxd],
                     [m.path for m in mounts(compose, "influxdb", volumes) if m.read_only])  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


async def run_provision(compose: dict[str, Any], volumes: Volumes, url: str) -> subprocess.CompletedProcess[bytes]:
    """One pass of influx-provision: the meter-bridge image's entrypoint with compose's command."""
    service = compose["services"]["influx-provision"]
    env = service_environment(compose, "influx-provision", BRIDGE_DIR / "Dockerfile", volumes)
    shipped = Path(env["BRIDGE_DEFAULT_CONFIG"])
    shipped.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(BRIDGE_DIR / "default-config.yaml", shipped)
    env.update(PATH=f"{VENV_BIN}:{os.environ['PATH']}", INFLUX_URL=url)
    command = [arg for arg in service["command"] if arg not in ("--every", "3600")]  # one pass
    argv = read_only(["sh", str(BRIDGE_DIR / "entrypoint.sh"), *command],
                     [m.path for m in mounts(compose, "influx-provision", volumes) if m.read_only])  # fmt: skip
    process = await asyncio.create_subprocess_exec(*argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 180)  # a hang bound only
    return subprocess.CompletedProcess(argv, process.returncode or 0, out, err)


def visible_secrets(compose: dict[str, Any], service: str, volumes: Volumes, secrets: dict[str, str]) -> set[str]:
    """Which of `secrets` (name -> value) lie in a file of a volume `service` mounts."""
    seen = set()
    for mount in mounts(compose, service, volumes):
        for path in mount.path.rglob("*"):
            if path.is_file():
                text = path.read_text(errors="replace").strip()
                seen |= {name for name, value in secrets.items() if value == text}
    return seen


def bridge_start(compose: dict[str, Any], volumes: Volumes) -> dict[str, Any]:
    """The meter-bridge service's entrypoint as root; `meter-bridge` is a stand-in that records
    who it runs as and what it was given, and tries the token file itself."""
    env = service_environment(compose, "meter-bridge", BRIDGE_DIR / "Dockerfile", volumes)
    image = volumes("meter-bridge.image")
    shipped = Path(env["BRIDGE_DEFAULT_CONFIG"])
    shipped.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(BRIDGE_DIR / "default-config.yaml", shipped)
    # the broker's hand-over (mqtt writes it as root, 0600)
    password = Path(env["MQTT_PASSWORD_FILE"])
    password.write_text("from-the-broker\n")
    password.chmod(0o600)
    stand_in = image / "bin" / "meter-bridge"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    record = image / "record.json"
    # the system's Python: the stand-in runs as `bridge`, which may not reach the test's own (a
    # pyenv build under a 0700 /root on the CI machines)
    stand_in.write_text(
        f"#!/bin/sh\nexec {shutil.which('python3', path='/usr/bin') or sys.executable} -c '"
        "import json, os, sys\n"
        'try:\n    own = open(os.environ["INFLUX_TOKEN_FILE"]).read().strip()\n'
        "except OSError as err:\n    own = str(err)\n"
        'json.dump({"uid": os.getuid(), "gid": os.getgid(), "token": os.environ.get("INFLUX_TOKEN"), '
        f'"file": own}}, open("{record}", "w"))\' "$@"\n'
    )
    stand_in.chmod(0o755)
    record.touch()
    record.chmod(0o666)
    env.update(PATH=f"{stand_in.parent}:{os.environ['PATH']}", MQTT_WAIT_S="1", INFLUX_WAIT_S="1")
    argv = read_only(["sh", str(BRIDGE_DIR / "entrypoint.sh"), "status"],
                     [m.path for m in mounts(compose, "meter-bridge", volumes) if m.read_only])  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    recorded: dict[str, Any] = json.loads(record.read_text())
    return recorded


def home_assistant_token(compose: dict[str, Any], volumes: Volumes) -> str:
    """The InfluxDB token Home Assistant's seeding step (root, as in its image) put in HA's entry."""
    env = service_environment(compose, "homeassistant", REPO / "services" / "homeassistant" / "Dockerfile", volumes)
    env.update(PATH=os.environ["PATH"], HEMS_SEED_SOURCE=str(REPO / "ha-config"))
    seed = REPO / "services" / "homeassistant" / "hems_seed.py"
    argv = read_only([sys.executable, str(seed)],
                     [m.path for m in mounts(compose, "homeassistant", volumes) if m.read_only])  # fmt: skip
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    document = json.loads((Path(env["HA_CONFIG_DIR"]) / ".storage" / "core.config_entries").read_text())
    (entry,) = (e for e in document["data"]["entries"] if e["domain"] == "influxdb")
    return str(entry["data"].get("token"))


@pytest.mark.parametrize("fleet_token", [None, FLEET_TOKEN], ids=["generated", "fleet-variable"])
async def test_each_service_gets_its_own_influx_token_and_no_other(
    compose: dict[str, Any], volumes: Volumes, fleet_token: str | None
) -> None:
    bridge = image_users.require("meter-bridge", "influxdb")
    # first boot of influxdb: the admin token (generated, or the fleet's DOCKER_INFLUXDB_INIT_ADMIN_TOKEN)
    variables = {"DOCKER_INFLUXDB_INIT_ADMIN_TOKEN": fleet_token} if fleet_token else {}
    booted = boot_influxdb(compose, volumes, **variables)
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert "influxd read" not in booted.stdout, "influxd (the influxdb user) reads no secret"
    admin_token = (volumes("influxdb-data") / "setup-admin-token").read_text()
    assert admin_token == (fleet_token or admin_token)

    double = InfluxMgmtDouble(admin_token=admin_token)
    await double.start()
    try:
        provisioned = await run_provision(compose, volumes, double.url)
        assert provisioned.returncode == 0, (provisioned.stdout + provisioned.stderr).decode()
        # a second boot of influxdb changes nothing influx-provision relies on
        again = boot_influxdb(compose, volumes, **variables)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "influxd read" not in again.stdout
        assert (await run_provision(compose, volumes, double.url)).returncode == 0
    finally:
        await double.stop()
    issued = {a["description"].removeprefix("hems:"): a["token"] for a in double.authorizations.values()}
    assert set(issued) == {"bridge", "homeassistant", "dashboard"}
    secrets = {**issued, "admin": admin_token}

    # what each service's container can see at all: its own token, nothing else
    assert visible_secrets(compose, "meter-bridge", volumes, secrets) == {"bridge"}
    assert visible_secrets(compose, "homeassistant", volumes, secrets) == {"homeassistant"}
    assert visible_secrets(compose, "influx-provision", volumes, secrets) == set(secrets)
    for service in compose["services"]:
        if service not in ("meter-bridge", "homeassistant", "influx-provision", "influxdb"):
            assert visible_secrets(compose, service, volumes, secrets) == set(), service

    # and reads it as the user its image runs it as
    started = bridge_start(compose, volumes)
    user = bridge["meter-bridge"]
    assert (started["uid"], started["gid"]) == (user.uid, user.gid), "the bridge runs as `bridge`"
    assert started["token"] == issued["bridge"], started
    assert started["file"] == issued["bridge"], "bridge.token is readable by `bridge` itself"
    assert home_assistant_token(compose, volumes) == issued["homeassistant"]

    # the modes that give it: the admin token to influx-provision's group only
    secrets_dir = next(m.path for m in mounts(compose, "influx-provision", volumes) if m.target == "/influx-secrets")
    for path, mode, gid in ((secrets_dir, 0o750, user.gid), (secrets_dir / "admin.token", 0o640, user.gid),
                            (secrets_dir / "admin.password", 0o600, 0)):  # fmt: skip
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, 0, gid), path
