"""The `kasa` config section: every mistake reported as FILE:LINE: key.path: reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from meterbridge.config import load_config
from meterbridge.errors import ConfigError
from meterbridge.sinks.kasa.config import KasaPlugConfig, random_device_id, random_mac

HEAD = """\
mqtt: {username: bridge, password: secret}
kasa:
  enabled: true
  plugs:
"""


def _problems(tmp_path: Path, plugs: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + plugs)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [p.replace(str(path), "FILE") for p in caught.value.problems]


def test_a_valid_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        HEAD
        + """\
    - {id: lamp, alias: Lamp, mac: "52:00:00:00:00:01", watts: 40}
    - {id: tv, alias: TV, mac: "52:00:00:00:00:02", meter: tv}
    - {id: lounge, alias: Lounge, mac: "52:00:00:00:00:03", aggregate: [lamp, tv], address: 192.168.1.50}
"""
    )
    config = load_config(path)
    assert [plug.id for plug in config.kasa.plugs] == ["lamp", "tv", "lounge"]
    assert config.kasa.port == 9999


def test_a_plug_in_two_aggregates_is_reported_at_the_second_entry(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
    - {id: lamp, alias: Lamp, mac: "52:00:00:00:00:01", watts: 40}
    - id: lounge
      alias: Lounge
      mac: "52:00:00:00:00:02"
      aggregate: [lamp]
    - id: house
      alias: House
      mac: "52:00:00:00:00:03"
      aggregate:
        - lamp
""",
    )
    assert problems == ["FILE:14: kasa.plugs[2].aggregate[0]: 'lamp' is already in aggregate 'lounge'"]


def test_mac_required_valid_and_unique_and_one_value_per_plug(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
    - {id: a, alias: A, watts: 1}
    - {id: b, alias: B, mac: "52:00:00:00:00:01", watts: 1}
    - {id: c, alias: C, mac: "52:00:00:00:00:01", watts: 1}
    - {id: d, alias: D, mac: "nope", watts: 1}
    - {id: e, alias: E, mac: "52:00:00:00:00:05", watts: 1, meter: x}
    - {id: f, alias: F, mac: "52:00:00:00:00:06", aggregate: [ghost, f]}
""",
    )
    assert problems[0] == "FILE:5: kasa.plugs[0].mac: required key is missing"
    assert problems[1].startswith("FILE:8: kasa.plugs[3].mac: Value error, must be six colon-separated")
    assert problems[2].startswith("FILE:9: kasa.plugs[4]: Value error, set exactly one of meter, watts, aggregate")
    assert len(problems) == 3  # cross-plug checks run once each plug is valid on its own


def test_cross_plug_problems(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
    - {id: b, alias: B, mac: "52:00:00:00:00:01", watts: 1}
    - {id: c, alias: C, mac: "52:00:00:00:00:01", watts: 1}
    - {id: c, alias: F, mac: "52:00:00:00:00:06", aggregate: [ghost, c, b]}
    - {id: g, alias: G, mac: "52:00:00:00:00:07", aggregate: [b]}
""",
    )
    assert problems == [
        "FILE:6: kasa.plugs[1].mac: duplicate mac 52:00:00:00:00:01 (plug 0)",
        "FILE:7: kasa.plugs[2].id: duplicate plug id 'c' (plug 1)",
        "FILE:7: kasa.plugs[2].aggregate[0]: no plug has id 'ghost'",
        "FILE:8: kasa.plugs[3].aggregate[0]: 'b' is already in aggregate 'c'",
    ]


def test_random_identities() -> None:
    macs = {random_mac() for _ in range(200)}
    assert len(macs) == 200
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0b10
        assert not first & 0b01
    assert re.fullmatch(r"[0-9A-F]{40}", random_device_id())


def test_cli_new_plug_prints_a_usable_mac_and_device_id(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meterbridge.cli", "kasa", "new-plug"], capture_output=True, text=True, check=True
    ).stdout
    mac = re.search(r"^mac: (\S+)$", out, re.M)
    device_id = re.search(r"^device_id: (\S+)$", out, re.M)
    assert mac
    assert device_id
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + f'    - {{id: a, alias: A, mac: "{mac[1]}", device_id: {device_id[1]}, watts: 5}}\n')
    assert load_config(path).kasa.plugs[0].mac == mac[1]


@pytest.mark.parametrize(("plugs", "warned"), [(20, False), (21, True)])
async def test_more_than_20_plugs_are_allowed_but_warned_about(
    plugs: int, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from helpers.net import free_port
    from meterbridge.sinks.kasa.config import KasaConfig
    from meterbridge.sinks.kasa.sink import KasaSink

    config = KasaConfig.model_validate(
        {
            "enabled": True,
            "bind": "127.0.0.1",
            "port": free_port(),
            "plugs": [
                {"id": f"p{n}", "alias": f"Plug {n}", "mac": f"52:00:00:00:01:{n:02x}", "watts": 5}
                for n in range(plugs)
            ],
        }
    )
    sink = KasaSink(config)
    with caplog.at_level("WARNING"):
        await sink.start()
    await sink.close()
    assert any("Sense handles about 20" in message for message in caplog.messages) is warned


def test_device_id_may_be_the_mac_as_senselink_sent_it() -> None:
    plug = KasaPlugConfig(id="p", alias="P", mac="53:75:31:f6:4b:01", device_id="53:75:31:f6:4b:01", watts=1)
    assert plug.device_id == "53:75:31:F6:4B:01"
    with pytest.raises(ValidationError, match="40 hex digits"):
        KasaPlugConfig(id="p", alias="P", mac="53:75:31:f6:4b:01", device_id="not-an-id", watts=1)
