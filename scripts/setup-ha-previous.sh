#!/usr/bin/env bash
# Idempotent install of an older Home Assistant, 2024.3.3 (the newest release whose wheel
# accepts Python 3.11), for one test only: tests/integration/test_ha_upgrade.py runs a config dir
# first with it, then with the release's pinned HA (scripts/setup-ha.sh), to show that an
# upgraded home keeps its entity ids. Its own virtualenv, never the bridge's: HA pins hundreds of
# packages that would fight the bridge's own.
#
# - constraints: the package_constraints.txt shipped inside the HA wheel, so pip resolves the
#   exact set HA was released with;
# - josepy 1.14.0: josepy 2.x makes every HTTP request 500 through hass_nabucasa;
# - the requirements HA would otherwise pip-install at start-up (recorder, mqtt, http, the
#   influxdb integration of ha-config/packages/influxdb.yaml, ...), so
#   a test never needs the network and start-up stays ~1.5 s.
# A stamp file records the inputs; a second run with the same inputs returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."

HA_VERSION=2024.3.3
HA_VENV=${HA_PREVIOUS_VENV:-.cache/ha-$HA_VERSION}
EXTRA=(
    josepy==1.14.0
    paho-mqtt==1.6.1
    SQLAlchemy==2.0.27
    fnv-hash-fast==0.5.0
    psutil-home-assistant==0.0.1
    Pillow==10.2.0
    janus==1.0.0
    home-assistant-frontend==20240307.0
    securetar==2024.2.1
    PyTurboJPEG==1.7.1
    influxdb==5.3.1
    influxdb-client==1.24.0
    # `hass --script check_config` (homeassistant/scripts/check_config.py REQUIREMENTS)
    colorlog==6.8.2
)
stamp="$HA_VENV/.installed"
want="homeassistant==$HA_VERSION ${EXTRA[*]} +requirements-of-ha-config"
if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]] && [[ -x "$HA_VENV/bin/hass" ]]; then
    exit 0
fi

echo "setup-ha-previous: installing Home Assistant $HA_VERSION into $HA_VENV (about a minute)"
python3 -m venv "$HA_VENV"
"$HA_VENV/bin/pip" install -q --upgrade pip wheel
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$HA_VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$wheels" "homeassistant==$HA_VERSION"
wheel=$(ls "$wheels"/homeassistant-*.whl)
"$HA_VENV/bin/python" - "$wheel" "$wheels/constraints.txt" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    text = wheel.read("homeassistant/package_constraints.txt").decode()
# our pins win over the wheel's where both name a package (josepy)
ours = {"josepy"}
lines = [line for line in text.splitlines() if line.split("==")[0].strip().lower() not in ours]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
"$HA_VENV/bin/pip" install -q -c "$wheels/constraints.txt" "$wheel" "${EXTRA[@]}"
# The requirements of every integration ha-config/ loads (default_config and what it pulls in,
# influxdb, mqtt), read from HA's own manifests: `hass --script check_config` on the shipped
# configuration would otherwise pip-install them from the network on every fresh machine.
reqs=$("$HA_VENV/bin/python" - <<'PY'
import json
import pathlib

import homeassistant.components as components

base = pathlib.Path(components.__file__).parent
seen, todo, reqs = set(), ["default_config", "influxdb", "mqtt"], set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((base / domain / "manifest.json").read_text())
    reqs.update(manifest.get("requirements", []))
    todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
print(" ".join(sorted(reqs)))
PY
)
# shellcheck disable=SC2086 # one word per requirement
"$HA_VENV/bin/pip" install -q -c "$wheels/constraints.txt" $reqs
"$HA_VENV/bin/hass" --version >/dev/null
echo "$want" >"$stamp"
echo "setup-ha-previous: done"
