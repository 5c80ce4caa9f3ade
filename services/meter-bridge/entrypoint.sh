#!/bin/sh
# meter-bridge entrypoint: secrets from files into the environment, the configuration file,
# device nodes for USB serial adapters, a config check; then exec meter-bridge as `bridge`.
#
# Secrets from files: exactly two, each exported from its file while the variable itself is unset:
# MQTT_PASSWORD from MQTT_PASSWORD_FILE (the file the mqtt service writes into the volume it
# shares with us) and INFLUX_TOKEN from INFLUX_TOKEN_FILE (influx-provision's). Not every FOO_FILE:
# SSL_CERT_FILE, BRIDGE_CONFIG_FILE and the like name files on purpose (docs/deploy.md). A
# service variable MQTT_BRIDGE_PASSWORD (the one the broker uses too) wins over the file, so a
# changed variable never races the broker rewriting the file.
set -eu

config=${BRIDGE_CONFIG_FILE:-/data/config.yaml}
run_user=${BRIDGE_RUN_USER:-bridge}

log() { echo "meter-bridge-entrypoint: $*" >&2; }

if [ -n "${MQTT_BRIDGE_PASSWORD:-}" ] && [ -z "${MQTT_PASSWORD:-}" ]; then
    MQTT_PASSWORD=$MQTT_BRIDGE_PASSWORD
    export MQTT_PASSWORD
fi

# wait_for_file FILE SECONDS WHAT: until FILE is non-empty, at most SECONDS.
wait_for_file() {
    waited=0
    while [ ! -s "$1" ] && [ "$waited" -lt "$2" ]; do
        [ "$waited" -gt 0 ] || log "waiting for $3 in $1"
        sleep 1
        waited=$((waited + 1))
    done
}

# On first boot the broker may not have written our password yet: wait for it. Only for `run`:
# the other commands run through this entrypoint (influx-provision's `influx provision`) do not
# talk to the broker, and influx-provision does not even mount the credentials volume.
if [ -z "${MQTT_PASSWORD:-}" ] && [ -n "${MQTT_PASSWORD_FILE:-}" ] && [ "${1:-run}" = run ]; then
    wait_for_file "$MQTT_PASSWORD_FILE" "${MQTT_WAIT_S:-120}" "the MQTT password"
fi

# On first boot the influx-provision service may not have made our write token yet: wait for
# it (bounded: without it the bridge still runs, spooling what InfluxDB refuses).
if [ -z "${INFLUX_TOKEN:-}" ] && [ -n "${INFLUX_TOKEN_FILE:-}" ] && [ "${1:-run}" = run ]; then
    wait_for_file "$INFLUX_TOKEN_FILE" "${INFLUX_WAIT_S:-0}" "the InfluxDB token"
fi

# FOO_FILE -> FOO for the secrets named above, whose FOO is unset.
for name in MQTT_PASSWORD INFLUX_TOKEN; do
    eval "current=\${$name:-}"
    eval "file=\${${name}_FILE:-}"
    # shellcheck disable=SC2154 # both assigned by the evals above
    if [ -z "$current" ] && [ -r "$file" ] && [ -s "$file" ]; then
        value=$(cat "$file")
        export "$name=$value"
    fi
done
unset current file value

mkdir -p "$(dirname "$config")"
if [ -n "${BRIDGE_CONFIG:-}" ]; then
    printf '%s\n' "$BRIDGE_CONFIG" >"$config.new"
    mv "$config.new" "$config"
    log "configuration from the BRIDGE_CONFIG variable written to $config"
elif [ ! -e "$config" ]; then
    cp "${BRIDGE_DEFAULT_CONFIG:-/usr/share/hems/bridge-config.yaml}" "$config"
    log "first boot: wrote the default configuration to $config"
fi

# USB serial adapters (EMU-2: ttyACM, FTDI/CP210x: ttyUSB): the container is privileged (the one
# way balena lets it open a device plugged in after start), so make the adapters' nodes and their
# /dev/serial/by-id links now and keep them current while we run (hot-plug, replug), as root; the
# bridge itself runs as `bridge` without capabilities. See usb-serial.sh. Only where DEV_DIR says
# where /dev is (the image's ENV, or a test's folder): run natively as root elsewhere, this script
# must not touch the machine's own /dev.
usb_devices=no
if [ "$(id -u)" = 0 ] && [ -n "${DEV_DIR:-}" ]; then
    usb_devices=yes
    usb_lib=/usr/local/lib/hems/usb-serial.sh
    # the repository's layout, where the tests run this script
    [ -r "$usb_lib" ] || usb_lib="$(dirname "$0")/../usb-serial/usb-serial.sh"
    # shellcheck source=SCRIPTDIR/../usb-serial/usb-serial.sh
    . "$usb_lib"
    usb_serial_sync
fi
if [ "$(id -u)" = 0 ]; then
    chown -R "$run_user" "$(dirname "$config")" 2>/dev/null || true
    # influx-provision writes each consumer's token, as `bridge`, into that consumer's volume
    # (INFLUX_TOKENS_DIR/<consumer>): a fresh volume is a root-owned 0755 mount point. 0700: only
    # `bridge` (the meter-bridge container's reader) and root (Home Assistant's) look inside.
    if [ -n "${INFLUX_TOKENS_DIR:-}" ]; then
        for dir in "$INFLUX_TOKENS_DIR"/*/; do
            [ -d "$dir" ] || continue
            chown "$run_user:" "$dir" && chmod 0700 "$dir"
        done
    fi
fi

if [ "${1:-run}" = run ]; then
    # exit 2 with FILE:LINE: key.path: reason lines (visible in the balena log) on a bad config
    meter-bridge check-config --config "$config" >/dev/null
fi

# Hot-plug and replug while the bridge runs: a root loop keeps the nodes and links current. $$ is
# this shell, which `exec` turns into meter-bridge: the loop ends with it (a zombie counts as gone).
if [ "$usb_devices" = yes ] && [ "${1:-run}" = run ]; then
    (
        while kill -0 "$$" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$$/status"; do
            sleep "${USB_SCAN_S:-2}"
            usb_serial_sync
        done
    ) &
fi

if [ "$(id -u)" = 0 ] && [ "$run_user" != root ]; then
    # no capabilities at all, and no way back to them (the container itself is privileged)
    exec setpriv --reuid="$run_user" --regid="$run_user" --init-groups --inh-caps=-all --bounding-set=-all \
        --no-new-privs meter-bridge "$@" --config "$config"
fi
exec meter-bridge "$@" --config "$config"
