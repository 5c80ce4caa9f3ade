#!/bin/sh
# meter-bridge entrypoint: secrets from files into the environment, the configuration file,
# device nodes for USB serial adapters, a config check; then exec meter-bridge as `bridge`.
#
# Secrets: any variable FOO_FILE (FOO unset) exports FOO from that file, e.g. MQTT_PASSWORD from
# MQTT_PASSWORD_FILE, the file the mqtt service writes into the volume it shares with us. A
# device variable MQTT_BRIDGE_PASSWORD (the one the broker uses too) wins over the file, so a
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

# On first boot the broker may not have written our password yet: wait for it.
if [ -z "${MQTT_PASSWORD:-}" ] && [ -n "${MQTT_PASSWORD_FILE:-}" ]; then
    wait_for_file "$MQTT_PASSWORD_FILE" "${MQTT_WAIT_S:-120}" "the MQTT password"
fi

# On first boot the influx-provision service may not have made our write token yet: wait for
# it (bounded: without it the bridge still runs, spooling what InfluxDB refuses).
if [ -z "${INFLUX_TOKEN:-}" ] && [ -n "${INFLUX_TOKEN_FILE:-}" ] && [ "${1:-run}" = run ]; then
    wait_for_file "$INFLUX_TOKEN_FILE" "${INFLUX_WAIT_S:-0}" "the InfluxDB token"
fi

# FOO_FILE -> FOO for every such variable whose FOO is unset.
for name in $(env | sed -n 's/^\([A-Z][A-Z0-9_]*\)_FILE=.*/\1/p'); do
    eval "current=\${$name:-}"
    eval "file=\${${name}_FILE}"
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

# USB serial adapters (EMU-2: ttyACM, FTDI/CP210x: ttyUSB). docker refuses to start a container
# whose `devices:` entry is missing, and most homes have none, so compose allows these majors by
# device_cgroup_rules and we make the nodes of the adapters present now (sysfs shows the host's).
if [ "$(id -u)" = 0 ]; then
    for sys in "${SYSFS_TTY_DIR:-/sys/class/tty}"/ttyUSB* "${SYSFS_TTY_DIR:-/sys/class/tty}"/ttyACM*; do
        [ -r "$sys/dev" ] || continue
        node="${DEV_DIR:-/dev}/$(basename "$sys")"
        [ -e "$node" ] && continue
        numbers=$(cat "$sys/dev")
        mknod -m 0660 "$node" c "${numbers%%:*}" "${numbers##*:}"
        chgrp dialout "$node" 2>/dev/null || true
        log "serial device $node"
    done
    chown -R "$run_user" "$(dirname "$config")" 2>/dev/null || true
    # influx-provision writes the services' tokens there as `bridge`
    if [ -n "${INFLUX_TOKENS_DIR:-}" ] && [ -d "$INFLUX_TOKENS_DIR" ]; then
        chown "$run_user" "$INFLUX_TOKENS_DIR" 2>/dev/null || true
    fi
fi

if [ "${1:-run}" = run ]; then
    # exit 2 with FILE:LINE: key.path: reason lines (visible in the balena log) on a bad config
    meter-bridge check-config --config "$config" >/dev/null
fi

if [ "$(id -u)" = 0 ] && [ "$run_user" != root ]; then
    exec setpriv --reuid="$run_user" --regid="$run_user" --init-groups --inh-caps=-all \
        meter-bridge "$@" --config "$config"
fi
exec meter-bridge "$@" --config "$config"
