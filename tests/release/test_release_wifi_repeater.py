"""The wifi-repeater's script, run natively. NetworkManager and the host's D-Bus cannot run
here, so `nmcli` is a stand-in on PATH that records its arguments (the script's only peer);
what is tested is the script's validation and the nmcli calls it makes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers.release import REPO

SCRIPT = REPO / "services" / "wifi-repeater" / "repeater.sh"


def run(tmp_path: Path, *args: str, **variables: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run repeater.sh with a recording nmcli; returns the result and nmcli's calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    fake = bindir / "nmcli"
    fake.write_text(
        '#!/bin/sh\nfor a in "$@"; do printf "%s\\037" "$a"; done >>"$NMCLI_CALLS"; echo >>"$NMCLI_CALLS"\n'
        'case "$*" in *GENERAL.STATE*) [ -f "$NMCLI_CALLS.active" ] && echo activated ;; esac\n'
        'case "$*" in "connection up"*) touch "$NMCLI_CALLS.active" ;; esac\nexit 0\n'
    )
    fake.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "NMCLI_CALLS": str(calls), **variables}
    result = subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30)
    recorded = [line.split("\x1f")[:-1] for line in calls.read_text().splitlines()] if calls.exists() else []
    return result, recorded


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"AP_SSID": "hems", "AP_PASSWORD": "short"}, "at least 8"),
        ({"AP_SSID": "hems", "AP_PASSWORD": "1234567"}, "at least 8"),
        ({"AP_SSID": "hems"}, "AP_PASSWORD is required"),
        ({"AP_PASSWORD": "long-enough-pw"}, "AP_SSID is required"),
        ({"AP_SSID": "hems", "AP_PASSWORD": "x" * 64}, "at most 63"),
        ({"AP_SSID": "s" * 33, "AP_PASSWORD": "long-enough-pw"}, "32 bytes"),
        ({"AP_SSID": "hems", "AP_PASSWORD": "long-enough-pw", "AP_BAND": "6ghz"}, "AP_BAND"),
    ],
)
def test_refuses_bad_settings_when_enabled(tmp_path: Path, variables: dict[str, str], message: str) -> None:
    result, calls = run(tmp_path, "--once", WIFI_REPEATER_ENABLED="true", **variables)
    assert result.returncode == 2
    assert message in result.stderr
    assert not any(call[:2] == ["connection", "add"] for call in calls), "nothing was set up"
    assert variables.get("AP_PASSWORD", "\0") not in result.stderr, "the password is never logged"


def test_off_by_default_and_removes_the_access_point(tmp_path: Path) -> None:
    result, calls = run(tmp_path, "--once", AP_PASSWORD="short")
    assert result.returncode == 0, result.stderr
    assert calls == [["connection", "delete", "hems-ap"]]
    health, _ = run(tmp_path, "health")
    assert health.returncode == 0


def test_garbled_switch_is_refused(tmp_path: Path) -> None:
    result, _ = run(tmp_path, "--once", WIFI_REPEATER_ENABLED="maybe")
    assert result.returncode == 2
    assert "true or false" in result.stderr


def test_sets_up_a_wpa2_access_point_with_shared_ipv4(tmp_path: Path) -> None:
    health, _ = run(tmp_path, "health", WIFI_REPEATER_ENABLED="on", AP_SSID="Home extra", AP_PASSWORD="long-enough-pw")
    # liveness only: an inactive access point (a missing USB WiFi adapter) is not a restart
    assert health.returncode == 0
    assert "not active" in health.stdout
    result, calls = run(
        tmp_path, "--once", WIFI_REPEATER_ENABLED="on", AP_SSID="Home extra", AP_PASSWORD="long-enough-pw"
    )
    assert result.returncode == 0, result.stderr
    add = next(call for call in calls if call[:2] == ["connection", "add"])
    settings = dict(zip(add[::2], add[1::2], strict=False))
    assert settings["ifname"] == "wlan1"
    assert settings["con-name"] == "hems-ap"
    assert settings["ssid"] == "Home extra"
    after = add[add.index("--") + 1 :]
    options = dict(zip(after[::2], after[1::2], strict=True))
    assert options["802-11-wireless.mode"] == "ap"
    assert options["ipv4.method"] == "shared"
    assert options["wifi-sec.key-mgmt"] == "wpa-psk"
    assert options["wifi-sec.psk"] == "long-enough-pw"
    assert calls[-1] == ["connection", "up", "hems-ap"]
    assert "long-enough-pw" not in result.stderr
    health, _ = run(tmp_path, "health", WIFI_REPEATER_ENABLED="on", AP_SSID="Home extra", AP_PASSWORD="long-enough-pw")
    assert health.returncode == 0
