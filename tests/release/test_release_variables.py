"""Every variable a service reads is documented: in the README's variable table (section
"Deploying") and, unless it is a secret, in balena.yml's applicationEnvironmentVariables.
Secrets are never declared fleet-wide (they would reach every service, the configurator
included, issue 18): docs/deploy.md sets each as a service variable of the services that use it.

Read = referenced by a service's scripts (`$VAR`, `${VAR...}`, `os.environ`) or its shipped
config (`${VAR}`); for meter-bridge also what its config reference tells the operator to set (a
field described with `${VAR}`: the bridge reads it through its config) and what its package reads
with `os.environ`. Not the operator's: what the service's Dockerfile sets with ENV or compose sets
in `environment:` (internal wiring), what the script assigns itself, and balena's own BALENA_*.
Convention that makes this checkable: scripts use lower-case names for their local variables."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from helpers.release import REPO
from helpers.schema import is_secret, schema_fields

# Folders with a Dockerfile; services/usb-serial/ is a script the meter-bridge and zigbee2mqtt
# images copy, its variables set by their ENV.
SERVICE_DIRS = sorted(
    [p for p in (REPO / "services").iterdir() if (p / "Dockerfile").is_file()]
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


@functools.cache
def config_variables() -> dict[str, bool]:
    """Variable -> whether it holds a secret, for each `${VAR}` a field of the bridge's config
    reference tells the operator to use (e.g. `client_id`: "use `${PGE_CLIENT_ID}`")."""
    found: dict[str, bool] = {}
    for _, field in schema_fields():
        for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", field.description or ""):
            found[name] = found.get(name, False) or is_secret(field)
    return found


def read_by_the_package(folder: Path) -> set[str]:
    """Variables the Python package of `folder` (its src/) reads: from the environment, or
    through the config (see `config_variables`)."""
    if not (folder / "src").is_dir():
        return set()
    names = set(config_variables())
    for path in (folder / "src").rglob("*.py"):
        names |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]*)\"", path.read_text()))
    return names


def dockerfile_folder(service: dict[str, Any]) -> Path:
    """The folder of the Dockerfile a compose service builds from."""
    build = service["build"]
    if isinstance(build, str):
        return REPO / build
    return (REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).parent


def internal_to(folder: Path, compose: dict[str, Any]) -> set[str]:
    """Variables set for the service itself: Dockerfile ENV, compose environment, own assignments."""
    names: set[str] = set()
    dockerfile = folder / "Dockerfile"
    if dockerfile.exists():
        text = dockerfile.read_text().replace("\\\n", " ")
        for line in re.findall(r"^ENV\s+(.*)$", text, flags=re.MULTILINE):
            names |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    for service in compose["services"].values():
        if dockerfile_folder(service).resolve() == folder.resolve():
            names |= set(service.get("environment") or {})
    for path in folder.rglob("*.sh"):
        names |= set(re.findall(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=", path.read_text(), flags=re.MULTILINE))
    return names


def operator_variables(compose: dict[str, Any]) -> dict[str, set[str]]:
    """Service folder -> the variables an operator may set for it."""
    found = {}
    for folder in SERVICE_DIRS:
        names = read_by(folder) | read_by_the_package(folder)
        names -= internal_to(folder, compose) | NOT_VARIABLES | STANDARD
        found[folder.relative_to(REPO).as_posix()] = {n for n in names if not n.startswith("BALENA_")}
    return found


SECRET = re.compile(r"PASSWORD|TOKEN|_KEY$|_CERT$")


def secret(name: str) -> bool:
    """By its name, or because the config field it is for holds a secret (`PGE_CLIENT_ID`)."""
    return bool(SECRET.search(name)) or config_variables().get(name, False)


def readme_rows() -> dict[str, tuple[set[str], str]]:
    """Variable name -> (services, description) of the README's Deploying section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Deploying", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|[^|]*\| (.*) \|$", section, flags=re.MULTILINE)
    return {name: ({s.strip() for s in services.split(",")}, what) for name, services, what in rows}


def readme_table() -> set[str]:
    """Variable names in the README's Deploying section."""
    return set(readme_rows())


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
    # what the config reference tells the operator to set, what the package reads from os.environ
    assert {"PGE_CLIENT_ID", "PGE_CERT", "DUKE_REFRESH_TOKEN", "HA_TOKEN", "HA_URL"} <= found["services/meter-bridge"]
    assert secret("PGE_CLIENT_ID"), "a SecretStr field's variable is a secret whatever its name"
    assert not secret("HA_URL")


def test_every_variable_is_documented(compose: dict[str, Any], balena_yml: dict[str, Any]) -> None:
    table = readme_table()
    fleet = balena_variables(balena_yml)
    for folder, names in operator_variables(compose).items():
        assert names <= table, f"{folder}: missing from the README's variable table: {sorted(names - table)}"
        public = {n for n in names if not secret(n)}
        assert public <= fleet, f"{folder}: missing from balena.yml: {sorted(public - fleet)}"


def test_balena_yml_and_readme_agree(balena_yml: dict[str, Any]) -> None:
    assert balena_variables(balena_yml) == {n for n in readme_table() if not secret(n)}


def test_no_secret_is_declared_fleet_wide(balena_yml: dict[str, Any]) -> None:
    assert not [n for n in balena_variables(balena_yml) if secret(n)]
    secrets = {n for n in readme_table() if secret(n)}
    assert {"PROXY_ADMIN_PASSWORD", "TLS_KEY", "MQTT_BRIDGE_PASSWORD", "AP_PASSWORD"} <= secrets


def test_deploy_doc_sets_each_secret_on_its_services_only(compose: dict[str, Any]) -> None:
    """docs/deploy.md's commands: every secret as a service variable of each service the README
    names for it, and of no other; none for the configurator."""
    text = (REPO / "docs" / "deploy.md").read_text()
    commands = re.findall(r"^balena env set ([A-Z][A-Z0-9_]*) .* --service ([a-z0-9-]+)$", text, flags=re.MULTILINE)
    assert commands, "docs/deploy.md shows the commands"
    for name, (services, what) in readme_rows().items():
        if not secret(name) or what.startswith("Retired"):
            continue
        assert "*Service variable.*" in what, f"{name}: the README says how to set it"
        assert services <= set(compose["services"]), f"{name}: {services}"
        assert {s for n, s in commands if n == name} == services, name
    assert all(service != "hass-configurator" for _, service in commands)
    assert "environment" not in compose["services"]["hass-configurator"]


def test_each_secret_is_read_by_the_services_the_readme_names(compose: dict[str, Any]) -> None:
    """The README's service column is where docs/deploy.md sets the secret: each of those
    services must read it (a service variable set elsewhere would not reach its reader)."""
    readers: dict[str, set[str]] = {}
    for folder, names in operator_variables(compose).items():
        for service, declared in compose["services"].items():
            if dockerfile_folder(declared).resolve() == (REPO / folder).resolve():
                # the Python package reads some from a mapping of the environment
                in_code = {
                    n
                    for py in (REPO / folder).glob("src/**/*.py")
                    for n in re.findall(r"\"([A-Z][A-Z0-9_]*)\"", py.read_text())
                }
                for name in names | in_code:
                    readers.setdefault(name, set()).add(service)
    for name, (services, what) in readme_rows().items():
        if secret(name) and not what.startswith("Retired"):
            # (influx-provision runs the bridge's image: it may read more than it uses)
            assert services <= readers.get(name, set()), f"{name} is read by {readers.get(name)}, not {services}"
