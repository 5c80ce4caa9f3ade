#!/usr/bin/env bash
# Idempotent set-up of a development machine (Debian/Ubuntu): system packages the tests
# and the demo run natively, and the .venv with the bridge and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
# nginx and openssl: the release tests run the nginx entrypoint and `nginx -t` natively;
# victoria-metrics: the real peer of the InfluxDB v2 write API in tests.
# chromium: the browser test drives Debian's headless Chromium over the DevTools protocol.
# busybox: the mqtt entrypoint is also run with busybox's shell and tools only, as in its
# Alpine-based image.
# faketime: the fidelity test runs the bridge with a wall clock that starts wrong and jumps.
APT_PACKAGES=(mosquitto mosquitto-clients nginx openssl victoria-metrics chromium busybox faketime)
# npm: the release tests' @balena/compose parser and the Zigbee2MQTT settings schema come
# from the npm registry; Debian's npm only if the machine has none.
command -v npm >/dev/null || APT_PACKAGES+=(npm)

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
    # Debian starts a system-wide broker on :1883 and nginx on :80; ours run on private ports.
    for unit in mosquitto nginx; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
            "${sudo_cmd[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
    done
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

# The settings schema of the Zigbee2MQTT release the zigbee2mqtt service pins.
z2m_version=$(sed -n 's|^FROM koenkk/zigbee2mqtt:\([0-9.]*\).*|\1|p' services/zigbee2mqtt/Dockerfile)
z2m_dir=.cache/zigbee2mqtt-$z2m_version
if [[ -n $z2m_version && ! -f $z2m_dir/settings.schema.json ]]; then
    echo "setup: fetching the settings schema of zigbee2mqtt $z2m_version"
    mkdir -p "$z2m_dir"
    (
        cd "$z2m_dir"
        npm pack --silent "zigbee2mqtt@$z2m_version" >/dev/null
        tar xzf "zigbee2mqtt-$z2m_version.tgz" package/dist/util/settings.schema.json
        mv package/dist/util/settings.schema.json .
        rm -rf package "zigbee2mqtt-$z2m_version.tgz"
    )
fi

# balena's own compose parser for tests/release (npm, offline once installed). Without npm the
# test that needs it skips and says so.
BALENA_COMPOSE_DIR=${BALENA_COMPOSE_DIR:-.cache/npm-balena-compose}
if command -v npm >/dev/null && [[ ! -f "$BALENA_COMPOSE_DIR/node_modules/@balena/compose/package.json" ]]; then
    echo "setup: installing @balena/compose@7.4.1 into $BALENA_COMPOSE_DIR"
    mkdir -p "$BALENA_COMPOSE_DIR"
    npm install --silent --no-audit --no-fund --ignore-scripts --prefix "$BALENA_COMPOSE_DIR" @balena/compose@7.4.1 >/dev/null
fi
