"""The bridge's config defaults that name a host work where the release runs the bridge.

meter-bridge runs with `network_mode: host` (docker-compose.yml): compose service names
(`influxdb`, `homeassistant`, `mqtt`) resolve only inside the compose network, not there. So a
default URL or host of the schema is the host's loopback, at a port something on the host
listens on (a port compose publishes, or a host-network service's own), or a public name."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from helpers.schema import schema_fields

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# ports of the release's host-network services, which compose does not publish: Home Assistant's
# (the server_port services/homeassistant/hems_seed.py seeds by default)
HOST_NETWORK_PORTS = {8123: "homeassistant"}


def host_defaults() -> dict[str, tuple[str, int | None]]:
    """Key -> (host, port) of every default that is a URL or a host name."""
    found = {}
    for key, field in schema_fields():
        value = None if field.is_required() or field.default_factory is not None else field.default
        if not isinstance(value, str):
            continue
        if "://" in value:
            url = urlsplit(value)
            assert url.hostname, key
            found[key] = (url.hostname, url.port)
        elif key.endswith((".host", ".server")):
            found[key] = (value, None)
    return found


def published_ports(compose: dict[str, Any]) -> dict[int, str]:
    """Host port -> service, of every port compose publishes on the host's loopback (or all addresses)."""
    ports = {}
    for name, service in compose["services"].items():
        for spec in service.get("ports", []):
            parts = str(spec).split(":")
            if len(parts) == 3 and parts[0] not in LOOPBACK:
                continue
            ports[int(parts[-2])] = name
    return ports


def test_the_walk_finds_the_known_defaults() -> None:
    found = host_defaults()
    assert "InfluxConfig.url" in found
    assert "MqttConfig.host" in found
    assert "HomeAssistantActuatorConfig.url" in found, "inside a union inside a list"
    assert "HaSourceConfig.url" in found, "a source family"


def test_default_hosts_resolve_on_the_bridges_network(compose: dict[str, Any]) -> None:
    assert compose["services"]["meter-bridge"]["network_mode"] == "host"
    listening = {**published_ports(compose), **HOST_NETWORK_PORTS}
    for key, (host, port) in host_defaults().items():
        assert host not in compose["services"], f"{key}: {host} resolves only inside the compose network"
        if host in LOOPBACK and port is not None:
            assert port in listening, f"{key}: nothing on the host listens on {port}"
        elif host not in LOOPBACK:
            assert "." in host, f"{key}: {host} is neither loopback nor a public name"
