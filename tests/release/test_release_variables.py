"""Every variable a service reads is documented: in the README's variable table (section
"Deploying") and in balena.yml's applicationEnvironmentVariables.

Read = referenced by a service's scripts (`$VAR`, `${VAR...}`, `os.environ`) or its shipped
config (`${VAR}`). Not the operator's: what the service's Dockerfile sets with ENV or compose sets
in `environment:` (internal wiring), what the script assigns itself, and balena's own BALENA_*.
Convention that makes this checkable: scripts use lower-case names for their local variables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from helpers.release import REPO

SERVICE_DIRS = sorted(
    [p for p in (REPO / "services").iterdir() if p.is_dir()]
    + [p for p in (REPO / "nginx", REPO / "influx") if p.is_dir()]
)
NOT_VARIABLES = {"SYS"}  # `$SYS/broker/uptime` is an MQTT topic
STANDARD = {"PATH", "HOME", "HOSTNAME", "PWD", "USER", "TZ"}


def read_by(folder: Path) -> set[str]:
    """Variables the scripts and shipped config files in `folder` read."""
    names: set[str] = set()
    for path in folder.rglob("*"):
        if not path.is_file() or "src" in path.relative_to(folder).parts or "__pycache__" in path.parts:
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".py":
            names |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]*)\"", text))
        elif path.suffix in (".sh", ".yaml", ".yml") or text.startswith("#!"):
            names |= set(re.findall(r"\$\{?#?([A-Z][A-Z0-9_]*)", text))
    return names


def internal_to(folder: Path, compose: dict[str, Any]) -> set[str]:
    """Variables set for the service itself: Dockerfile ENV, compose environment, own assignments."""
    names: set[str] = set()
    dockerfile = folder / "Dockerfile"
    if dockerfile.exists():
        text = dockerfile.read_text().replace("\\\n", " ")
        for line in re.findall(r"^ENV\s+(.*)$", text, flags=re.MULTILINE):
            names |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    for service in compose["services"].values():
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("dockerfile", "").rsplit("/", 1)[0]
        if context and (REPO / context).resolve() == folder.resolve():
            names |= set(service.get("environment") or {})
    for path in folder.rglob("*.sh"):
        names |= set(re.findall(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=", path.read_text(), flags=re.MULTILINE))
    return names


def operator_variables(compose: dict[str, Any]) -> dict[str, set[str]]:
    """Service folder -> the variables an operator may set for it."""
    found = {}
    for folder in SERVICE_DIRS:
        names = read_by(folder) - internal_to(folder, compose) - NOT_VARIABLES - STANDARD
        found[folder.relative_to(REPO).as_posix()] = {n for n in names if not n.startswith("BALENA_")}
    return found


def readme_table() -> set[str]:
    """Variable names in the README's Deploying section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Deploying", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", section, flags=re.MULTILINE))


def balena_variables(balena_yml: dict[str, Any]) -> set[str]:
    """Names in balena.yml's applicationEnvironmentVariables."""
    return {next(iter(entry)) for entry in balena_yml["data"]["applicationEnvironmentVariables"]}


def test_scanner_finds_the_known_variables(compose: dict[str, Any]) -> None:
    found = operator_variables(compose)
    assert {"PROXY_ADMIN_PASSWORD", "TLS_CERT", "TLS_HOSTNAME"} <= found["nginx"]
    assert {"AP_PASSWORD", "AP_SSID", "WIFI_REPEATER_ENABLED"} <= found["services/wifi-repeater"]
    assert {"MQTT_SHELLY_PASSWORD"} <= found["services/mosquitto"]
    assert {"SITE_ID", "BRIDGE_CONFIG", "MQTT_BRIDGE_PASSWORD"} <= found["services/meter-bridge"]
    assert "MQTT_HOMEASSISTANT_PASSWORD" in found["services/homeassistant"]
    assert "NGINX_HTTPS_PORT" not in found["nginx"], "set by the Dockerfile: internal"
    assert "MQTT_PASSWORD" not in found["services/meter-bridge"], "assigned by the entrypoint: internal"


def test_every_variable_is_documented(compose: dict[str, Any], balena_yml: dict[str, Any]) -> None:
    table = readme_table()
    fleet = balena_variables(balena_yml)
    for folder, names in operator_variables(compose).items():
        assert names <= table, f"{folder}: missing from the README's variable table: {sorted(names - table)}"
        assert names <= fleet, f"{folder}: missing from balena.yml: {sorted(names - fleet)}"


def test_balena_yml_and_readme_agree(balena_yml: dict[str, Any]) -> None:
    assert balena_variables(balena_yml) == readme_table()
