#!/usr/bin/env bash
# Idempotent install of the Home Assistant the release ships, for `make demo` and every test that
# runs a real HA. One pin: the version is read from services/homeassistant/Dockerfile's FROM line.
#
# HA 2026.x needs Python >= 3.14.2, which Debian bookworm (and so a user's fresh machine) lacks:
# - a python3.14 (>= 3.14.2) on the PATH is used directly (HA in a venv under .cache/);
# - otherwise a Debian sid root (debootstrap, minbase) with Debian's python3.14 is built under
#   .cache/ha-root (about 3 minutes and 2 GB once), HA goes into a venv inside it, and
#   .cache/ha/bin/hass runs it there: a private mount namespace (unshare -m; for a user who is
#   not root also a user namespace, so no sudo at run time) binds /proc, /dev, /sys and the
#   `--config` directory's top-level directory at the same path inside the root, then chroot
#   execs hass.
#   The exec chain keeps the PID, so signals (SIGTERM from tests and supervisord) reach hass.
#
# Either way `.cache/ha/bin/hass` is the one entry point (tests/helpers/homeassistant.py and
# scripts/demo.sh use it) and `.cache/ha/version` says which HA it runs.
#
# Packages: the HA wheel with its own homeassistant/package_constraints.txt as constraints, then
# (same constraints) the requirements of every integration HA loads at start (bootstrap's core
# sets, default_config, and what ha-config/ and the tests use), walked through manifest.json
# `dependencies`/`after_dependencies`, plus what `hass --script check_config` installs at run time,
# so neither `hass --skip-pip` nor check_config reaches the network. pyotp and
# PyQRCode: HA 2026's auth MFA modules import them at start.
# A stamp records the inputs; a second run with the same inputs returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)

HA_VERSION=$(sed -n 's|^FROM ghcr.io/home-assistant/home-assistant:\([0-9.]*\).*|\1|p' services/homeassistant/Dockerfile)
[[ -n $HA_VERSION ]] || { echo "setup-ha: no HA version in services/homeassistant/Dockerfile" >&2; exit 1; }
HA_DIR=${HA_DIR:-$REPO/.cache/ha}
HA_ROOT=${HA_ROOT:-$REPO/.cache/ha-root}
SID_MIRROR=${SID_MIRROR:-http://deb.debian.org/debian}
# Integrations beyond bootstrap's own sets that the release's ha-config/ and the tests load.
DOMAINS="default_config mqtt influxdb recorder energy http frontend lovelace history logbook input_number input_boolean input_select template backup"
EXTRA="pyotp PyQRCode"

want="homeassistant==$HA_VERSION domains=$DOMAINS extra=$EXTRA v5"
stamp=$HA_DIR/.installed
if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -x $HA_DIR/bin/hass ]]; then
    exit 0
fi

host_python=""
for candidate in python3.14 python3.15; do
    if command -v "$candidate" >/dev/null &&
        "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 14, 2))' 2>/dev/null; then
        host_python=$(command -v "$candidate")
        break
    fi
done

as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)

# --- where HA's Python runs -------------------------------------------------------------------
if [[ -n $host_python ]]; then
    echo "setup-ha: Home Assistant $HA_VERSION on $host_python"
    venv=$HA_DIR/venv
    in_root() { "$@"; }
    venv_in=$venv
else
    echo "setup-ha: Home Assistant $HA_VERSION in a Debian sid root at $HA_ROOT (python3.14; the first time takes about 3 minutes)"
    root_stamp=$HA_ROOT/.hems-root
    root_want="sid python3.14 v1"
    if [[ ! -f $root_stamp || "$(cat "$root_stamp")" != "$root_want" ]]; then
        command -v debootstrap >/dev/null || {
            "${as_root[@]}" apt-get update -qq
            DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
        }
        "${as_root[@]}" rm -rf "$HA_ROOT"
        mkdir -p "$(dirname "$HA_ROOT")"
        "${as_root[@]}" debootstrap --variant=minbase sid "$HA_ROOT" "$SID_MIRROR" >"$REPO/.cache/debootstrap.log" 2>&1 || {
            tail -20 "$REPO/.cache/debootstrap.log" >&2
            exit 1
        }
        # The archive's sid Release file can be past its Valid-Until date.
        echo 'Acquire::Check-Valid-Until "false";' | "${as_root[@]}" tee "$HA_ROOT/etc/apt/apt.conf.d/99hems-no-valid-until" >/dev/null
        "${as_root[@]}" cp /etc/resolv.conf "$HA_ROOT/etc/resolv.conf"
        # This machine's CA certificates (a TLS-inspecting egress, for one), so pip inside trusts
        # the same registries as the host.
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            "${as_root[@]}" mkdir -p "$HA_ROOT/usr/local/share/ca-certificates"
            "${as_root[@]}" cp /usr/local/share/ca-certificates/*.crt "$HA_ROOT/usr/local/share/ca-certificates/"
        fi
        # shellcheck disable=SC2016 # expanded by the inner shell
        "${as_root[@]}" unshare -m --propagation private sh -ec '
            root=$1
            mount --rbind /proc "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /sys "$root/sys"
            exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive sh -ec "
                apt-get update -qq
                apt-get install -y -qq --no-install-recommends python3.14 python3.14-venv python3.14-dev \
                    build-essential libffi-dev libssl-dev ca-certificates zlib1g-dev libjpeg62-turbo-dev \
                    libturbojpeg0 libpcap0.8t64 pkg-config tzdata >/dev/null
                update-ca-certificates >/dev/null
                apt-get clean
            "' sh "$HA_ROOT"
        echo "$root_want" | "${as_root[@]}" tee "$root_stamp" >/dev/null
    fi
    # A new venv per install (the old one keeps serving running tests until the wrapper points
    # at the new one; it is removed at the end).
    venv_in=/opt/ha-$HA_VERSION-$(date +%s)
    venv=$HA_ROOT$venv_in
    # Run a command inside the root with a clean environment (the host's PIP_* settings point at
    # host paths and would leak in).
    in_root() {
        # shellcheck disable=SC2016 # expanded by the inner shell
        "${as_root[@]}" unshare -m --propagation private sh -ec '
            root=$1; work=$2; shift 2
            mount --rbind /proc "$root/proc"; mount --rbind /dev "$root/dev"; mount --rbind /sys "$root/sys"
            mkdir -p "$root/tmp/hems-setup"; mount --bind "$work" "$root/tmp/hems-setup"
            exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
                PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"' sh "$HA_ROOT" "$work" "$@"
    }
    host_python=/usr/bin/python3.14
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ $venv_in == /opt/ha-* ]]; then work_in=/tmp/hems-setup; else work_in=$work; fi

rm -rf "$venv"
in_root "$host_python" -m venv "$venv_in"
in_root "$venv_in/bin/pip" install -q --upgrade pip wheel
in_root "$venv_in/bin/pip" download -q --no-deps --only-binary=:all: -d "$work_in" "homeassistant==$HA_VERSION"
wheel=$(cd "$work" && ls homeassistant-*.whl)
in_root "$venv_in/bin/python" -c '
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    open(sys.argv[2], "w").write(wheel.read("homeassistant/package_constraints.txt").decode())
' "$work_in/$wheel" "$work_in/constraints.txt"
# shellcheck disable=SC2086 # one word per requirement
in_root "$venv_in/bin/pip" install -q -c "$work_in/constraints.txt" "$work_in/$wheel" $EXTRA
# shellcheck disable=SC2016,SC2086 # Python source; one word per domain
reqs=$(in_root "$venv_in/bin/python" -c '
import json, pathlib, sys
import homeassistant.bootstrap as bootstrap
import homeassistant.components as components
import homeassistant.scripts.check_config as check_config

base = pathlib.Path(components.__file__).parent
todo = list(sys.argv[1:])
for name in dir(bootstrap):
    value = getattr(bootstrap, name)
    if name.isupper() and isinstance(value, (set, frozenset)) and all(isinstance(v, str) for v in value):
        todo += sorted(value)
seen, reqs = set(), set(check_config.REQUIREMENTS)  # `hass --script check_config` pip-installs these
while todo:
    domain = todo.pop()
    manifest_path = base / domain / "manifest.json"
    if domain in seen or not manifest_path.exists():
        continue
    seen.add(domain)
    manifest = json.loads(manifest_path.read_text())
    reqs.update(manifest.get("requirements", []))
    todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
print(" ".join(sorted(reqs)))
' $DOMAINS)
# shellcheck disable=SC2086 # one word per requirement
in_root "$venv_in/bin/pip" install -q -c "$work_in/constraints.txt" $reqs

# The one entry point, on the host.
mkdir -p "$HA_DIR/bin"
if [[ $venv_in == /opt/ha-* ]]; then
    # The checkout's top-level directory as a mount point (a user namespace cannot make one in
    # the root-owned root at run time; /tmp, /home, /srv, /mnt exist already).
    top=/$(echo "$REPO" | cut -d/ -f2)
    [[ -d $HA_ROOT$top ]] || "${as_root[@]}" mkdir "$HA_ROOT$top"
fi
if [[ $venv_in == /opt/ha-* ]]; then
    cat >"$HA_DIR/bin/hass.new" <<EOF
#!/bin/sh
# Generated by scripts/setup-ha.sh: Home Assistant $HA_VERSION inside the Debian sid root
# $HA_ROOT. The --config directory's top-level directory is bound at the same path inside, so
# callers pass host paths (and paths in the config, like a recorder db_url, stay valid).
# unshare, sh and chroot each exec the next: the caller's PID is hass's PID.
root=$HA_ROOT
config=
prev=
for arg in "\$@"; do
    case \$prev in -c|--config) config=\$arg ;; esac
    case \$arg in --config=*) config=\${arg#--config=} ;; esac
    prev=\$arg
done
# As root a private mount namespace; as anyone else also a user namespace mapping them to root
# in it (no sudo at run time: supervisord starts this without a terminal).
userns=--map-root-user
[ "\$(id -u)" = 0 ] && userns=
exec unshare \$userns --mount --propagation private sh -ec '
    root=\$1; config=\$2; shift 2
    mount --rbind /proc "\$root/proc"; mount --rbind /dev "\$root/dev"; mount --rbind /sys "\$root/sys"
    if [ -n "\$config" ]; then
        # the top-level directory of the config dir (/tmp, /home, the checkout), at the same path
        top=/\$(echo "\$config" | cut -d/ -f2)
        [ -d "\$root\$top" ] || mkdir "\$root\$top"
        mount --rbind "\$top" "\$root\$top"
    fi
    exec chroot "\$root" /usr/bin/env -i PATH=$venv_in/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 TZ="\${TZ:-UTC}" $venv_in/bin/hass "\$@"
' sh "\$root" "\$( [ -n "\$config" ] && mkdir -p "\$config" && cd "\$config" && pwd -P )" "\$@"
EOF
else
    cat >"$HA_DIR/bin/hass.new" <<EOF
#!/bin/sh
# Generated by scripts/setup-ha.sh: Home Assistant $HA_VERSION on $host_python.
exec "$venv/bin/hass" "\$@"
EOF
fi
chmod +x "$HA_DIR/bin/hass.new"
got=$("$HA_DIR/bin/hass.new" --version)
[[ $got == "$HA_VERSION" ]] || { echo "setup-ha: hass --version says $got, expected $HA_VERSION" >&2; exit 1; }
mv "$HA_DIR/bin/hass.new" "$HA_DIR/bin/hass"
if [[ $venv_in == /opt/ha-* ]]; then
    for old in "$HA_ROOT"/opt/ha "$HA_ROOT"/opt/ha-*; do
        if [[ -e $old && $old != "$venv" ]]; then "${as_root[@]}" rm -rf "$old"; fi
    done
fi
echo "$HA_VERSION" >"$HA_DIR/version"
echo "$want" >"$stamp"
echo "setup-ha: done (Home Assistant $HA_VERSION)"
