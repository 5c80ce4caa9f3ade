"""docker-compose.yml and balena.yml, validated offline: the compose-spec schema
(check-jsonschema), the `compose-spec` package, balena's own parser (@balena/compose 7.4.1,
installed by scripts/setup.sh) and balena's rules as this project reads them (KNOWLEDGE.md)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml

from helpers.release import REPO

BIN = Path(sys.executable).parent
BALENA_COMPOSE_DIR = REPO / ".cache" / "npm-balena-compose"
CHECKER = Path(__file__).with_name("balena_compose_check.js")

# The service fields balena's Supervisor passes on to the engine, verbatim from
# balena-os/balena-supervisor src/compose/sanitise.ts `supportedComposeFields` (commit
# 01727295d437a56448e828e8aaedeaf79b1a1581). The supervisor camelCases the compose keys
# (src/compose/utils.ts camelCaseConfig) and drops every other field with "Ignoring unsupported
# or unknown compose fields" (device_cgroup_rules among them), so a field off this list does
# nothing on a device, whatever a compose validator says.
SUPERVISOR_SERVICE_FIELDS = {
    "capAdd", "capDrop", "command", "cgroupParent", "devices", "dns", "dnsOpt", "dnsSearch",
    "tmpfs", "entrypoint", "environment", "extraHosts", "groupAdd", "healthcheck", "image",
    "init", "labels", "running", "networkMode", "networks", "pid", "pidsLimit", "ports",
    "securityOpt", "stopGracePeriod", "stopSignal", "storageOpt", "sysctls", "ulimits",
    "usernsMode", "volumes", "restart", "cpuShares", "cpuQuota", "cpus", "cpuset", "domainname",
    "hostname", "ipc", "macAddress", "memLimit", "memReservation", "oomKillDisable",
    "oomScoreAdj", "privileged", "readOnly", "runtime", "shmSize", "user", "workingDir", "tty",
}  # fmt: skip
# Fields used before that filter: `build` by balena's builder (the release carries the image it
# built), `depends_on` by Service.fromComposeObject (src/compose/service.ts, start order only).
CONSUMED_BEFORE_SANITISE = {"build", "depends_on"}


def camel_case(key: str) -> str:
    """A compose key as the supervisor names it (`network_mode` -> `networkMode`)."""
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


# Keys balena's Supervisor does not support (v3-only, or ignored/refused on a device).
UNSUPPORTED_TOP = {"secrets", "configs", "x-", "name", "include"}
UNSUPPORTED_SERVICE = {
    "profiles",
    "secrets",
    "configs",
    "env_file",
    "container_name",
    "logging",
    "extends",
    "links",
    "external_links",
    "deploy",
    "volumes_from",
    "isolation",
    "scale",
    "platform",
    "userns_mode",
}
KNOWN_LABELS = {
    "io.balena.features.dbus",
    "io.balena.features.supervisor-api",
    "io.balena.features.balena-api",
    "io.balena.features.kernel-modules",
    "io.balena.features.firmware",
    "io.balena.features.sysfs",
    "io.balena.features.procfs",
    "io.balena.features.journal-logs",
    "io.balena.update.strategy",
}
RESTART = {"no", "always", "on-failure", "unless-stopped"}


def balena_problems(compose: dict[str, Any]) -> list[str]:
    """Every way `compose` breaks balena's dialect (empty when it is fine)."""
    problems: list[str] = []
    if str(compose.get("version")) != "2.4":
        problems.append(f"version must be '2.4', not {compose.get('version')!r}")
    for key in compose:
        if key in UNSUPPORTED_TOP or key.startswith("x-"):
            problems.append(f"top-level key {key!r} is not supported")
    if "${" in json.dumps(compose):
        problems.append("variable substitution (${...}) is not supported")
    declared = set(compose.get("volumes") or {})
    for name, service in (compose.get("services") or {}).items():
        for key in service:
            if key in UNSUPPORTED_SERVICE:
                problems.append(f"{name}: key {key!r} is not supported")
            elif key not in CONSUMED_BEFORE_SANITISE and camel_case(key) not in SUPERVISOR_SERVICE_FIELDS:
                problems.append(f"{name}: key {key!r} is ignored by the supervisor (not in sanitise.ts)")
        if "build" not in service and "image" not in service:
            problems.append(f"{name}: needs build or image")
        if service.get("restart") not in RESTART:
            problems.append(f"{name}: restart {service.get('restart')!r} is not one of {sorted(RESTART)}")
        if "depends_on" in service and not isinstance(service["depends_on"], list):
            problems.append(f"{name}: depends_on must be a list")
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if "/" in source or source.startswith(".") or source not in declared:
                problems.append(f"{name}: volume {volume!r} is not a declared named volume")
        for label in service.get("labels") or {}:
            if label.startswith(("io.balena.", "io.resin.")) and label not in KNOWN_LABELS:
                problems.append(f"{name}: unknown balena label {label!r}")
    return problems


def test_compose_spec_schema() -> None:
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_spec_package(compose: dict[str, Any]) -> None:
    parsed = compose_spec.PyCompose.from_yaml((REPO / "docker-compose.yml").read_text())
    parsed.validate()
    assert set(parsed.service_names()) == set(compose["services"])
    # and it is strict enough to catch a bad restart policy
    broken = copy.deepcopy(compose)
    broken["services"]["mqtt"]["restart"] = "sometimes"
    with pytest.raises(ValueError, match=r"restart: unknown variant `sometimes`"):
        compose_spec.PyCompose.from_yaml(yaml.safe_dump(broken)).validate()


def test_balena_rules(compose: dict[str, Any]) -> None:
    assert balena_problems(compose) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c.update(version="3.8"), "version"),
        (lambda c: c["services"]["mqtt"]["volumes"].append("./mosquitto:/etc/x"), "named volume"),
        (lambda c: c["services"]["mqtt"]["volumes"].append("undeclared:/x"), "named volume"),
        (lambda c: c["services"]["mqtt"].update(environment={"A": "${A}"}), "substitution"),
        (lambda c: c["services"]["meter-bridge"].update(depends_on={"mqtt": {}}), "depends_on"),
        (lambda c: c["services"]["mqtt"].update(container_name="x"), "container_name"),
        (lambda c: c["services"]["mqtt"].update(labels={"io.balena.features.everything": "1"}), "label"),
        (lambda c: c.update(secrets={}), "secrets"),
        (lambda c: c["services"]["mqtt"].update(restart="sometimes"), "restart"),
        (lambda c: c["services"]["meter-bridge"].update(device_cgroup_rules=["c 188:* rmw"]), "device_cgroup_rules"),
        (lambda c: c["services"]["mqtt"].update(expose=["1883"]), "expose"),
    ],
)
def test_balena_rules_catch_violations(compose: dict[str, Any], change: Any, problem: str) -> None:
    broken = copy.deepcopy(compose)
    change(broken)
    assert any(problem in p for p in balena_problems(broken)), balena_problems(broken)


def run_balena_parser(compose: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """balena's own parser on `compose` (skips only when node/npm are not on this machine)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("npm/node not installed: balena's @balena/compose parser cannot run here")
    if not (BALENA_COMPOSE_DIR / "node_modules" / "@balena" / "compose").is_dir():
        pytest.fail(f"@balena/compose@7.4.1 missing in {BALENA_COMPOSE_DIR}: run `make setup`")
    env = {**os.environ, "NODE_PATH": str(BALENA_COMPOSE_DIR / "node_modules")}
    return subprocess.run(
        ["node", str(CHECKER)], input=json.dumps(compose), capture_output=True, text=True, env=env, timeout=120
    )


def test_balena_compose_parser_accepts_release(compose: dict[str, Any]) -> None:
    result = run_balena_parser(compose)
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(result.stdout)["services"]) == sorted(compose["services"])


def test_balena_compose_parser_rejects_bind_mount(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["mqtt"]["volumes"].append("/etc/passwd:/x")
    result = run_balena_parser(broken)
    assert result.returncode == 1
    assert "bind" in result.stderr.lower()


def dockerfile_of(service: dict[str, Any]) -> Path:
    """The Dockerfile a service builds from."""
    build = service["build"]
    if isinstance(build, str):
        return REPO / build / "Dockerfile"
    return REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def test_every_service_is_pinned_restarted_and_health_checked(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "build" in service, f"{name}: every image is built from a pinned Dockerfile"
        assert service["restart"] == "always", name
        dockerfile = dockerfile_of(service)
        if not dockerfile.exists():
            # influx/ and services/zigbee2mqtt/ come from their own issues: compose must still
            # give them a healthcheck
            assert "healthcheck" in service, f"{name}: no Dockerfile here and no healthcheck in compose"
            continue
        text = dockerfile.read_text()
        assert "HEALTHCHECK" in text or "healthcheck" in service, f"{name}: no healthcheck"
        for image in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
            if "/" not in image and ":" not in image:
                continue  # a build stage
            tag = image.rsplit(":", 1)[-1]
            assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
            assert "latest" not in tag, f"{name}: {image}"


def test_privileged_only_for_usb_serial_and_only_needed_labels(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # the one supervisor-honoured way to open a USB stick plugged in after start (see
    # SUPERVISOR_SERVICE_FIELDS); their entrypoints drop it (test_release_usb_serial)
    assert {name for name, s in services.items() if s.get("privileged")} == {"meter-bridge", "zigbee2mqtt"}
    assert not any("devices" in s or "device_cgroup_rules" in s for s in services.values())
    labelled = {name: set(s.get("labels", {})) for name, s in services.items() if s.get("labels")}
    assert labelled == {"wifi-repeater": {"io.balena.features.dbus"}}


def test_credentials_volumes_are_shared_only_with_their_consumer(compose: dict[str, Any]) -> None:
    mounts: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            mounts.setdefault(volume.split(":")[0], set()).add(name)
    for consumer in ("bridge", "homeassistant", "zigbee2mqtt"):
        expected = {"mqtt", "meter-bridge" if consumer == "bridge" else consumer}
        assert mounts[f"mqtt-creds-{consumer}"] == expected
    assert mounts["mqtt-data"] == {"mqtt"}, "generated secrets stay in the broker's own volume"
    assert mounts["nginx-data"] == {"nginx"}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            if volume.startswith("mqtt-creds-") and name != "mqtt":
                assert volume.endswith(":ro"), f"{name} mounts its credentials read-only"


def test_balena_yml(balena_yml: dict[str, Any]) -> None:
    assert balena_yml["type"] == "sw.application"
    assert balena_yml["name"]
    assert balena_yml["description"]
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", str(balena_yml["version"]))
    assert balena_yml["assets"]["repository"]["data"]["url"].startswith("https://")
    data = balena_yml["data"]
    assert data["defaultDeviceType"] == "raspberrypi4-64"
    assert set(data["supportedDeviceTypes"]) == {"raspberrypi4-64", "raspberrypi5"}
    variables = data["applicationEnvironmentVariables"]
    for entry in variables:
        assert isinstance(entry, dict), entry
        assert len(entry) == 1, entry
        ((key, value),) = entry.items()
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", key), entry
        assert isinstance(value, str), entry
        if re.search(r"PASSWORD|TOKEN|_KEY$|_CERT$", key):
            assert value == "", f"{key}: no default secrets (empty = generated on first boot / unset)"
    assert len({next(iter(e)) for e in variables}) == len(variables), "no duplicates"


def test_compose_text_has_no_substitution() -> None:
    # also in comments: balena's builder would not substitute it, a reader might think it does
    assert "${" not in (REPO / "docker-compose.yml").read_text()


def test_influxdb_batches_its_wal_fsync(compose: dict[str, Any]) -> None:
    # issue 18 (SD card): InfluxDB 2.7's option `storage-wal-fsync-delay`, as its environment
    # variable INFLUXD_STORAGE_WAL_FSYNC_DELAY (docs.influxdata.com influxdb/v2 config-options;
    # default 0s, an fsync per write)
    delay = compose["services"]["influxdb"]["environment"]["INFLUXD_STORAGE_WAL_FSYNC_DELAY"]
    assert re.fullmatch(r"[1-9]\d*(ms|s)", delay), delay
