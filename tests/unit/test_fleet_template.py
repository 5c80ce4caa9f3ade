"""The fleet-wide template (`BRIDGE_FLEET_CONFIG`) under each home's config, and role rules (issue 26, item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterbridge.config import FLEET_VARIABLE, load_config, merge_template
from meterbridge.discovery import RoleName, RoleRule
from meterbridge.errors import ConfigError
from meterbridge.model import Quantity
from meterbridge.roles import Role, proposed_role

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "services" / "meter-bridge" / "default-config.yaml"
ENV = {"MQTT_PASSWORD": "secret"}
FLEET = """\
site: {currency: EUR}
discovery:
  tasmota: false
  role_rules:
    - {type: emu2, role: grid}
    - {type: shelly, meter: "shelly_*_1", role: solar}
"""


def test_the_home_wins_over_the_template_key_by_key() -> None:
    merged = merge_template({"site": {"currency": "EUR", "name": "x"}, "sources": [1]}, {"site": {"name": "y"}})
    assert merged == {"site": {"currency": "EUR", "name": "y"}, "sources": [1]}
    assert merge_template({"sources": [1, 2]}, {"sources": [3]}) == {"sources": [3]}, "lists are replaced"


def test_every_home_gets_the_template_under_its_own_config(tmp_path: Path) -> None:
    home = tmp_path / "config.yaml"
    home.write_text(DEFAULT_CONFIG.read_text().replace('name: "${SITE_NAME:-Home}"', "name: The Smiths"))
    config = load_config(home, {**ENV, FLEET_VARIABLE: FLEET})
    assert (config.site.currency, config.site.name) == ("EUR", "The Smiths")
    assert config.discovery is not None
    assert config.discovery.tasmota is False, "the fleet's"
    assert [rule.role for rule in config.discovery.role_rules] == ["grid", "solar"]
    assert load_config(home, ENV).site.currency == "GBP", "no template: the home's config alone"
    # a home that says otherwise wins over the fleet, key by key
    assert config.discovery.zigbee2mqtt_base_topic == "zigbee2mqtt", "Z2M_BASE_TOPIC unset: its default"
    home.write_text(home.read_text().replace("discovery:\n", "discovery:\n  tasmota: true\n"))
    config = load_config(home, {**ENV, FLEET_VARIABLE: FLEET, "Z2M_BASE_TOPIC": "z2m"})
    assert config.discovery is not None
    assert (config.discovery.tasmota, len(config.discovery.role_rules)) == (True, 2)
    assert config.discovery.zigbee2mqtt_base_topic == "z2m", "the release's Z2M_BASE_TOPIC"


def test_a_mistake_in_the_template_names_the_variable(tmp_path: Path) -> None:
    home = tmp_path / "config.yaml"
    home.write_text(DEFAULT_CONFIG.read_text())
    with pytest.raises(ConfigError) as err:
        load_config(home, {**ENV, FLEET_VARIABLE: "site:\n  currency: euros\n"})
    assert str(err.value).count(f"${FLEET_VARIABLE}:2: site.currency:") == 1, str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(home, {**ENV, FLEET_VARIABLE: "site: [\n"})
    assert f"${FLEET_VARIABLE}:" in str(err.value)
    home.write_text(DEFAULT_CONFIG.read_text() + "bogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(home, {**ENV, FLEET_VARIABLE: FLEET})
    assert f"{home}:" in str(err.value)
    assert "bogus" in str(err.value)


def test_role_rules_come_before_the_devices_own_proposal() -> None:
    rules = [RoleRule(type="shelly", meter="shelly_*_1", role="solar"), RoleRule(model="*Heat*", role="heat_pump")]
    assert proposed_role("shelly", "shelly_pro_em_1", {}, rules) is Role.SOLAR
    assert proposed_role("shelly", "shelly_pro_em_0", {}, rules) is Role.DEVICE
    assert proposed_role("mqtt", "x", {}, rules, model="Heat meter") is Role.HEAT_PUMP
    assert proposed_role("emu2", "emu2", {Quantity.POWER: 1.0}) is Role.GRID


def test_the_schema_knows_every_role() -> None:
    import typing

    assert set(typing.get_args(RoleName)) == {role.value for role in Role}
