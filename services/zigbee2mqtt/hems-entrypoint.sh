#!/bin/sh
# Entrypoint of the zigbee2mqtt service (POSIX sh: the official image is Alpine/busybox).
#
# Renders Zigbee2MQTT's configuration.yaml from environment (balena) variables on every
# start, then execs the image's command. While no adapter is plugged in (or no MQTT
# password is available yet) it idles with one clear log line and checks again every
# ZIGBEE_RECHECK_S seconds, instead of letting Zigbee2MQTT crash-loop.
#
# Variables: ZIGBEE_ADAPTER (required: /dev/ttyUSB0, /dev/serial/by-id/..., or
# tcp://host:port), ZIGBEE_ADAPTER_TYPE (zstack, ember, deconz, zigate, ezsp, zboss, zoh;
# default: detected), ZIGBEE_CHANNEL (11-26), Z2M_MQTT_SERVER (mqtt://mqtt:1883),
# Z2M_MQTT_USER (zigbee2mqtt), MQTT_ZIGBEE2MQTT_PASSWORD or Z2M_MQTT_PASSWORD_FILE (required, no
# default), Z2M_BASE_TOPIC (zigbee2mqtt), Z2M_HOMEASSISTANT (true), Z2M_FRONTEND_TOKEN
# (the web UI is off unless a token is set), ZIGBEE2MQTT_DATA (/app/data).
#
# Secrets never go into configuration.yaml: the MQTT password and the UI token are written
# to secret.yaml (mode 600) and the network key, generated here once, lives in
# network.yaml; configuration.yaml refers to them with Zigbee2MQTT's `!file key` form.
set -eu

DATA=${ZIGBEE2MQTT_DATA:-/app/data}
ADAPTER=${ZIGBEE_ADAPTER:-}
RECHECK_S=${ZIGBEE_RECHECK_S:-30}
MQTT_SERVER=${Z2M_MQTT_SERVER:-mqtt://mqtt:1883}
MQTT_USER=${Z2M_MQTT_USER:-zigbee2mqtt}
BASE_TOPIC=${Z2M_BASE_TOPIC:-zigbee2mqtt}
HOMEASSISTANT=${Z2M_HOMEASSISTANT:-true}

log() {
    echo "hems-zigbee2mqtt: $*"
}

# A YAML single-quoted scalar: the only escape is '' for '.
quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"
}

mqtt_password() {
    if [ -n "${MQTT_ZIGBEE2MQTT_PASSWORD:-}" ]; then
        printf '%s' "$MQTT_ZIGBEE2MQTT_PASSWORD"
    elif [ -n "${Z2M_MQTT_PASSWORD_FILE:-}" ] && [ -r "$Z2M_MQTT_PASSWORD_FILE" ]; then
        cat "$Z2M_MQTT_PASSWORD_FILE"
    fi
}

# Why Zigbee2MQTT cannot start yet (empty when it can).
not_ready() {
    case $ADAPTER in
        "") echo "ZIGBEE_ADAPTER is not set (set it to the adapter's /dev/serial/by-id/... path)"; return ;;
        tcp://*) ;;
        *) [ -e "$ADAPTER" ] || { echo "no Zigbee adapter at $ADAPTER"; return; } ;;
    esac
    case ${ZIGBEE_ADAPTER_TYPE:-zstack} in
        zstack | ember | deconz | zigate | ezsp | zboss | zoh) ;;
        *) echo "ZIGBEE_ADAPTER_TYPE '${ZIGBEE_ADAPTER_TYPE:-}' is not one of zstack ember deconz zigate ezsp zboss zoh"; return ;;
    esac
    case ${ZIGBEE_CHANNEL:-11} in
        1[1-9] | 2[0-6]) ;;
        *) echo "ZIGBEE_CHANNEL '${ZIGBEE_CHANNEL:-}' is not a Zigbee channel (11-26)"; return ;;
    esac
    password=$(mqtt_password)
    if [ -z "$password" ]; then
        echo "no MQTT password (set MQTT_ZIGBEE2MQTT_PASSWORD or Z2M_MQTT_PASSWORD_FILE)"
    elif [ "$(printf '%s' "$password" | wc -l)" -ne 0 ]; then
        echo "the MQTT password contains a line break"
    fi
}

# Random bytes as a YAML flow list of numbers: `random_list 16` -> [12, 200, ...].
random_list() {
    # shellcheck disable=SC2046 # word splitting of od's output is the point
    set -- $(od -An -tu1 -N"$1" /dev/urandom)
    list=$1
    shift
    for byte in "$@"; do
        list="$list, $byte"
    done
    echo "[$list]"
}

# The Zigbee network's identity, made once: a new one would orphan every paired device.
make_network() {
    pan_id=$(( $(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % 16382 + 1 ))
    umask 077
    {
        echo "# The Zigbee network of this appliance, generated on first start. Keep it: a new key"
        echo "# means re-pairing every device."
        echo "network_key: $(random_list 16)"
        echo "pan_id: $pan_id"
        echo "ext_pan_id: $(random_list 8)"
    } >"$DATA/network.yaml.tmp"
    mv "$DATA/network.yaml.tmp" "$DATA/network.yaml"
}

render() {
    [ -s "$DATA/network.yaml" ] || make_network
    pan_id=$(sed -n 's/^pan_id: //p' "$DATA/network.yaml")
    ext_pan_id=$(sed -n 's/^ext_pan_id: //p' "$DATA/network.yaml")
    for file in devices.yaml groups.yaml; do
        [ -e "$DATA/$file" ] || echo "{}" >"$DATA/$file"
    done
    (
        umask 077
        {
            echo "mqtt_password: $(quote "$(mqtt_password)")"
            if [ -n "${Z2M_FRONTEND_TOKEN:-}" ]; then
                echo "frontend_token: $(quote "$Z2M_FRONTEND_TOKEN")"
            fi
        } >"$DATA/secret.yaml"
    )
    {
        echo "# Rendered by hems-entrypoint.sh from balena variables on every start: change those,"
        echo "# not this file. Device names and groups live in devices.yaml and groups.yaml."
        echo "version: 5"
        echo "homeassistant:"
        echo "  enabled: $([ "$HOMEASSISTANT" = true ] && echo true || echo false)"
        echo "frontend:"
        if [ -n "${Z2M_FRONTEND_TOKEN:-}" ]; then
            echo "  enabled: true"
            echo "  port: 8080"
            echo "  auth_token: '!secret frontend_token'"
        else
            echo "  enabled: false"
        fi
        echo "mqtt:"
        echo "  base_topic: $(quote "$BASE_TOPIC")"
        echo "  server: $(quote "$MQTT_SERVER")"
        echo "  user: $(quote "$MQTT_USER")"
        echo "  password: '!secret mqtt_password'"
        echo "serial:"
        echo "  port: $(quote "$ADAPTER")"
        if [ -n "${ZIGBEE_ADAPTER_TYPE:-}" ]; then
            echo "  adapter: $ZIGBEE_ADAPTER_TYPE"
        fi
        echo "availability:"
        echo "  enabled: true"
        echo "advanced:"
        echo "  network_key: '!network network_key'"
        echo "  pan_id: $pan_id"
        echo "  ext_pan_id: $ext_pan_id"
        if [ -n "${ZIGBEE_CHANNEL:-}" ]; then
            echo "  channel: $ZIGBEE_CHANNEL"
        fi
        echo "  log_output: [console]"
        echo "devices: devices.yaml"
        echo "groups: groups.yaml"
    } >"$DATA/configuration.yaml"
}

# Without `privileged` (balena gives this container only device_cgroup_rules for USB serial
# majors 188 and 166), /dev holds no node for an adapter plugged in after start: make the
# nodes of the USB serial adapters the host has now (sysfs shows the host's), as the
# meter-bridge entrypoint does. Re-run on every check so a hot-plugged dongle is found.
make_serial_nodes() {
    [ "$(id -u)" = 0 ] || return 0
    for sys in "${SYSFS_TTY_DIR:-/sys/class/tty}"/ttyUSB* "${SYSFS_TTY_DIR:-/sys/class/tty}"/ttyACM*; do
        [ -r "$sys/dev" ] || continue
        node="${DEV_DIR:-/dev}/$(basename "$sys")"
        [ -e "$node" ] && continue
        numbers=$(cat "$sys/dev")
        mknod -m 0660 "$node" c "${numbers%%:*}" "${numbers##*:}" 2>/dev/null && log "serial device $node"
    done
}

# The healthcheck counts the idle state as healthy: waiting for a dongle is not a fault.
IDLE_MARKER=${Z2M_IDLE_MARKER:-/tmp/hems-zigbee2mqtt-idle}

mkdir -p "$DATA"
said=""
while :; do
    make_serial_nodes
    reason=$(not_ready)
    [ -z "$reason" ] && break
    : >"$IDLE_MARKER"
    if [ "$reason" != "$said" ]; then
        log "$reason; Zigbee2MQTT is idle, checking again every ${RECHECK_S} s"
        said=$reason
    fi
    sleep "$RECHECK_S"
done

rm -f "$IDLE_MARKER"
render
log "starting Zigbee2MQTT with the adapter at $ADAPTER (MQTT user $MQTT_USER on $MQTT_SERVER)"
export ZIGBEE2MQTT_DATA="$DATA"
exec "$@"
