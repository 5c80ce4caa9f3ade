#!/usr/bin/env bash
# Idempotent set-up of a development machine (Debian/Ubuntu): system packages the tests
# and the demo run natively, and the .venv with the bridge and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
APT_PACKAGES=(mosquitto mosquitto-clients victoria-metrics)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts a system-wide broker on :1883; ours run on private ports, so stop it.
    if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
        "${sudo_cmd[@]}" systemctl disable --now mosquitto >/dev/null 2>&1 || true
    fi
fi

stamp="$VENV/.installed"
inputs=(services/meter-bridge/pyproject.toml)
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
if [[ ! -f "$stamp" ]] || [[ -n "$(find "${inputs[@]}" -newer "$stamp" 2>/dev/null)" ]]; then
    echo "setup: installing the bridge and dev tools into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e "services/meter-bridge[dev]"
    touch "$stamp"
fi
