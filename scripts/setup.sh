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
# python3-venv: the .venv is made from the distribution's Python 3.11, the one a user's fresh Debian
# has (not a pyenv build a development machine may carry, which also lives where the images' users
# the tests drop to cannot read it).
# faketime: the fidelity test runs the bridge with a wall clock that starts wrong and jumps.
APT_PACKAGES=(python3-venv mosquitto mosquitto-clients nginx openssl victoria-metrics chromium busybox faketime)
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
lock=services/meter-bridge/requirements.lock
inputs=(services/meter-bridge/pyproject.toml "$lock")
if [[ ! -x "$VENV/bin/python" ]]; then
    python=/usr/bin/python3
    [[ -x $python ]] || python=$(command -v python3)
    "$python" -m venv "$VENV"
fi
if [[ ! -f "$stamp" ]] || [[ -n "$(find "${inputs[@]}" -newer "$stamp" 2>/dev/null)" ]]; then
    echo "setup: installing the bridge and dev tools into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    # The bridge's runtime dependencies exactly as its image installs them (the lock; `make lock`
    # regenerates it), then the bridge itself without dependencies, then the dev tools held to the
    # lock's versions (a constraints file may not carry hashes: the pins alone).
    "$VENV/bin/pip" install -q --require-hashes --only-binary=:all: -r "$lock"
    "$VENV/bin/pip" install -q --no-deps -e services/meter-bridge
    sed -n 's/^\([A-Za-z0-9._-]*==[^ ;]*\).*/\1/p' "$lock" >"$VENV/lock-constraints.txt"
    "$VENV/bin/pip" install -q -c "$VENV/lock-constraints.txt" -e "services/meter-bridge[dev]"
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

# Upstream tables the tests read (packed, never installed): the command manifest of the balena-cli
# release the docs' commands are checked against (tests/release/test_docs_commands.py), and
# zigbee-herdsman's adapter discovery at the version the pinned Zigbee2MQTT depends on (its
# coordinator table, tests/integration/test_zigbee_coordinators.py).
BALENA_CLI_VERSION=25.2.6
balena_cli_dir=.cache/balena-cli-$BALENA_CLI_VERSION
if command -v npm >/dev/null && [[ ! -f $balena_cli_dir/oclif.manifest.json ]]; then
    echo "setup: fetching the command manifest of balena-cli $BALENA_CLI_VERSION"
    mkdir -p "$balena_cli_dir"
    (
        cd "$balena_cli_dir"
        npm pack --silent "balena-cli@$BALENA_CLI_VERSION" >/dev/null
        tar xzf "balena-cli-$BALENA_CLI_VERSION.tgz" package/oclif.manifest.json
        mv package/oclif.manifest.json oclif.manifest.json.tmp
        rm -rf package "balena-cli-$BALENA_CLI_VERSION.tgz"
        mv oclif.manifest.json.tmp oclif.manifest.json
    )
fi
z2m_pin=$(sed -n 's|^FROM koenkk/zigbee2mqtt:\([0-9.]*\).*|\1|p' services/zigbee2mqtt/Dockerfile)
herdsman_dir=.cache/zigbee-herdsman-for-zigbee2mqtt-$z2m_pin
if command -v npm >/dev/null && [[ -n $z2m_pin && ! -f $herdsman_dir/package/dist/adapter/adapterDiscovery.js ]]; then
    herdsman_version=$(npm view "zigbee2mqtt@$z2m_pin" dependencies.zigbee-herdsman)
    echo "setup: fetching zigbee-herdsman $herdsman_version (what zigbee2mqtt $z2m_pin depends on)"
    rm -rf "$herdsman_dir" && mkdir -p "$herdsman_dir"
    (
        cd "$herdsman_dir"
        tarball=$(npm pack --silent "zigbee-herdsman@$herdsman_version" | tail -n 1)
        tar xzf "$tarball" package/package.json package/dist
        rm -f "$tarball"
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

# The images' own users (scripts/image-users.tsv): the release and end-to-end tests run every
# entrypoint as root and let it drop to its image's user, with the image's uid and gid. Root only
# (useradd); elsewhere the tests that need them skip and say so. Idempotent. A name the machine
# already has with other numbers is an error, never changed: the test-name column avoids that for
# Debian's own `mosquitto` user. A uid or gid the machine already uses under another name is shared
# (--non-unique): nginx's 101 is a Debian system uid.
if [[ $(id -u) -eq 0 ]]; then
    while read -r service _ uid gid group extra name _; do
        [[ -z $service || $service == \#* || $name == - ]] && continue
        # the primary group: the user's own (named like the user here), or a shared one (dialout)
        [[ $group == dialout ]] || group=$name
        getent group "$group" >/dev/null || groupadd --non-unique --gid "$gid" "$group"
        if ! getent passwd "$name" >/dev/null; then
            echo "setup: adding user $name ($uid:$gid, the $service image's)"
            useradd --non-unique --uid "$uid" --gid "$gid" --home-dir /nonexistent --no-create-home \
                --shell /usr/sbin/nologin "$name"
        fi
        [[ $extra == - ]] || usermod --append --groups "$extra" "$name"
        if [[ $(getent group "$group" | cut -d: -f3) != "$gid" || $(id -u "$name"):$(id -g "$name") != "$uid:$gid" ]]; then
            echo "setup: $name is $(id -u "$name"):$(id -g "$name") (group $group) here, the $service image's is $uid:$gid" >&2
            exit 1
        fi
    done < <(tr '\t' ' ' <scripts/image-users.tsv)

    # Those users run this checkout's code and reach its directories (the bridge runs from $VENV,
    # the services' state lives under it in the demo), as on a device they reach their image's
    # files. A checkout under a private home (/root is 0700) would stop them at its first directory:
    # give each image uid search access (x only: no listing, no reading) to every directory above
    # the checkout that it cannot pass, with an ACL, and say so.
    repo=$(pwd -P)
    uids=$(awk '!/^#/ && NF { print $3 }' scripts/image-users.tsv | sort -u)
    # from / down, so that a directory is judged once the ones above it let the users through
    dir=""
    IFS=/ read -ra parts <<<"${repo#/}"
    for part in "${parts[@]}"; do
        dir=$dir/$part
        for uid in $uids; do
            if ! setpriv --reuid="$uid" --regid="$uid" --clear-groups test -x "$dir"; then
                command -v setfacl >/dev/null ||
                    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends acl >/dev/null
                echo "setup: giving the images' users (uids ${uids//$'\n'/ }) search access to $dir (ACL), so tests and the demo can run services as their images' users"
                for each in $uids; do setfacl -m "u:$each:x" "$dir"; done
                break
            fi
        done
    done
fi
