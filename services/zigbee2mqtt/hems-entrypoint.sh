#!/bin/sh
# Entrypoint of the zigbee2mqtt service (POSIX sh: the official image is Alpine/busybox).
#
# Renders Zigbee2MQTT's configuration.yaml from environment (balena) variables on every
# start, then execs the image's command. While no adapter is plugged in (or no MQTT
# password is available yet) it idles with one clear log line and checks again every
# ZIGBEE_RECHECK_S seconds, instead of letting Zigbee2MQTT crash-loop.
#
# Variables: ZIGBEE_ADAPTER (default: the first known coordinator found by its USB ids, see
# COORDINATORS below; or a path such as /dev/serial/by-id/..., or tcp://host:port),
# ZIGBEE_ADAPTER_TYPE (zstack, ember, deconz, zigate, ezsp, zboss, zoh; default: the known
# coordinator's, else detected by Zigbee2MQTT), ZIGBEE_CHANNEL (11-26), Z2M_MQTT_SERVER
# (mqtt://mqtt:1883), Z2M_MQTT_USER (zigbee2mqtt), MQTT_ZIGBEE2MQTT_PASSWORD or
# Z2M_MQTT_PASSWORD_FILE (required, no default), Z2M_BASE_TOPIC (zigbee2mqtt), Z2M_HOMEASSISTANT
# (true), Z2M_FRONTEND_PORT (8080: the web UI, published on the host's 127.0.0.1 only and served
# by nginx at /zigbee2mqtt/ behind the admin login), ZIGBEE2MQTT_DATA (/app/data).
#
# Secrets never go into configuration.yaml: the MQTT password is written to secret.yaml (mode
# 600) and the network key, generated here once, lives in network.yaml; configuration.yaml refers
# to them with Zigbee2MQTT's `!file key` form.
set -eu

DATA=${ZIGBEE2MQTT_DATA:-/app/data}
ADAPTER=${ZIGBEE_ADAPTER:-}
ADAPTER_TYPE=${ZIGBEE_ADAPTER_TYPE:-}
FRONTEND_PORT=${Z2M_FRONTEND_PORT:-8080}
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
        "") echo "no known Zigbee coordinator is plugged in (or set ZIGBEE_ADAPTER to its /dev/serial/by-id/... path)"; return ;;
        tcp://*) ;;
        *) [ -e "$ADAPTER" ] || { echo "no Zigbee adapter at $ADAPTER"; return; } ;;
    esac
    case ${ADAPTER_TYPE:-zstack} in
        zstack | ember | deconz | zigate | ezsp | zboss | zoh) ;;
        *) echo "ZIGBEE_ADAPTER_TYPE '$ADAPTER_TYPE' is not one of zstack ember deconz zigate ezsp zboss zoh"; return ;;
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
        echo "mqtt_password: $(quote "$(mqtt_password)")" >"$DATA/secret.yaml"
    )
    {
        echo "# Rendered by hems-entrypoint.sh from balena variables on every start: change those,"
        echo "# not this file. Device names and groups live in devices.yaml and groups.yaml."
        echo "version: 5"
        echo "homeassistant:"
        echo "  enabled: $([ "$HOMEASSISTANT" = true ] && echo true || echo false)"
        # nginx serves it at /zigbee2mqtt/ behind the admin login (compose publishes the port on
        # the host's 127.0.0.1 only), so the UI has no login of its own
        echo "frontend:"
        echo "  enabled: true"
        echo "  port: $FRONTEND_PORT"
        echo "  base_url: /zigbee2mqtt"
        echo "mqtt:"
        echo "  base_topic: $(quote "$BASE_TOPIC")"
        echo "  server: $(quote "$MQTT_SERVER")"
        echo "  user: $(quote "$MQTT_USER")"
        echo "  password: '!secret mqtt_password'"
        echo "serial:"
        echo "  port: $(quote "$ADAPTER")"
        if [ -n "$ADAPTER_TYPE" ]; then
            echo "  adapter: $ADAPTER_TYPE"
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

# The coordinators we know by their USB ids, in the order they are looked for: "vid pid glob
# type", the glob matched against "manufacturer product" in lower case (`?` for a space). Many
# coordinators use a generic USB-serial chip (CP210x 10c4:ea60, CH340 1a86:7523, FTDI 0403:6015)
# that meters' adapters use too, so the product string must match as well: this container never
# takes an EMU-2 or an FTDI meter cable. Ids and globs: Home Assistant's USB matchers
# (home-assistant/core homeassistant/generated/usb.py: zha and homeassistant_sky_connect).
COORDINATORS='
10c4 ea60 *sonoff*plus* zstack
1a86 55d4 *sonoff*plus* ember
1cf1 0030 *conbee* deconz
0403 6015 *conbee* deconz
10c4 ea60 *skyconnect* ember
10c4 ea60 *connect?zbt-1* ember
10c4 ea60 *slzb-07* ember
10c4 ea60 *2652* zstack
1a86 7523 *zigstar* zstack
0403 6015 *zigate* zigate
10c4 ea60 *zigate* zigate
'

# balena runs this container privileged (the supervisor ignores device_cgroup_rules): make the
# nodes and /dev/serial/by-id links of the USB serial adapters plugged in now, on every check
# so a dongle plugged in later is found. Zigbee2MQTT exits when its adapter goes away and balena
# restarts the container, which comes back here: that is the replug path.
usb_lib=/usr/local/lib/hems/usb-serial.sh
# the repository's layout, where the tests run this script
[ -r "$usb_lib" ] || usb_lib="$(dirname "$0")/../usb-serial/usb-serial.sh"
# shellcheck source=SCRIPTDIR/../usb-serial/usb-serial.sh
. "$usb_lib"

# Without a ZIGBEE_ADAPTER, take the first known coordinator plugged in, and its adapter type
# unless ZIGBEE_ADAPTER_TYPE says otherwise.
choose_adapter() {
    # only where DEV_DIR says where /dev is (the image's ENV): never a native run's own /dev
    if [ "$(id -u)" = 0 ] && [ -n "${DEV_DIR:-}" ]; then usb_serial_sync; fi
    [ -z "${ZIGBEE_ADAPTER:-}" ] || return 0
    found=$(printf '%s\n' "$COORDINATORS" | usb_serial_find) || return 0
    ADAPTER=${found%% *}
    [ -n "${ZIGBEE_ADAPTER_TYPE:-}" ] || ADAPTER_TYPE=${found#* }
}

# The healthcheck counts the idle state as healthy: waiting for a dongle is not a fault.
IDLE_MARKER=${Z2M_IDLE_MARKER:-/tmp/hems-zigbee2mqtt-idle}

mkdir -p "$DATA"
said=""
while :; do
    choose_adapter
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
log "starting Zigbee2MQTT with the adapter at $ADAPTER${ADAPTER_TYPE:+ ($ADAPTER_TYPE)} (MQTT user $MQTT_USER on $MQTT_SERVER)"
export ZIGBEE2MQTT_DATA="$DATA"
# The container is privileged (for the USB stick): Zigbee2MQTT itself runs as Z2M_RUN_USER
# (the image's `zigbee2mqtt`, group dialout for the stick) without capabilities and without a
# way back to them; it owns its data volume.
run_user=${Z2M_RUN_USER:-root}
if [ "$(id -u)" = 0 ] && [ "$run_user" != root ]; then
    chown -R "$run_user" "$DATA"
    exec setpriv --reuid="$run_user" --regid=dialout --init-groups --inh-caps=-all --bounding-set=-all \
        --no-new-privs "$@"
fi
exec "$@"
