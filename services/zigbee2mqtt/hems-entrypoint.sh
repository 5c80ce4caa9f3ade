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
# serial options herdsman gives the coordinator found (rtscts=true baudrate=460800)
ADAPTER_OPTIONS=""
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
        for option in $ADAPTER_OPTIONS; do
            echo "  ${option%%=*}: ${option#*=}"
        done
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

# The coordinators Zigbee2MQTT's own discovery knows (zigbee-herdsman's USB fingerprints,
# dist/adapter/adapterDiscovery.js of the herdsman the pinned Zigbee2MQTT depends on), one line
# each in herdsman's order: "adapter;vendor id;product id;manufacturer;by-id pattern;serial options".
# Generated, never edited by hand: `python3 scripts/zigbee_coordinators.py --write` (after
# `make setup` fetched herdsman); tests/integration/test_zigbee_coordinators.py fails when it
# differs from herdsman's or when this script chooses otherwise than herdsman for a stick.
# The patterns are herdsman's regular expressions as POSIX ERE (`grep -Ei`), matched against the
# node and its /dev/serial/by-id name as herdsman matches serialport's `path` and `pnpId`.
COORDINATORS='
deconz;1cf1;0030;dresden elektronik ingenieurtechnik GmbH;.*conbee.*;
deconz;0403;6015;dresden elektronik ingenieurtechnik GmbH;.*conbee.*;
ember;10c4;ea60;Nabu Casa;.*Nabu_Casa_SkyConnect.*;rtscts=true
ember;10c4;ea60;Nabu Casa;.*Nabu_Casa.*_ZBT-1.*;rtscts=true
ember;303a;4001;Nabu Casa;.*Nabu_Casa_ZBT-2.*;baudrate=460800 rtscts=true
ember;303a;831a;Nabu Casa;.*Nabu_Casa_ZBT-2.*;baudrate=460800 rtscts=true
ember;10c4;ea60;SMLIGHT;.*slzb-06m.*;rtscts=false
ember;10c4;ea60;SMLIGHT;.*slzb-07_.*;rtscts=true
ember;10c4;ea60;SMLIGHT;.*slzb-07mg24.*;rtscts=true
ember;1a86;55d4;ITEAD;.*sonoff.*plus.*;rtscts=false
ember;10c4;ea60;ITEAD;.*sonoff.*plus_v2_.*;rtscts=false
ember;10c4;ea60;SONOFF;.*sonoff.*max.*;rtscts=false
ember;10c4;ea60;SONOFF;.*sonoff.*plus.*mg24.*;rtscts=false
ember;10c4;ea60;SONOFF;.*sonoff.*lite.*mg21.*;rtscts=false
zstack;0403;6015;Electrolama;.*electrolama.*;
zstack;10c4;ea60;Silicon Labs;.*slae\.sh_cc2652rb.*;
zstack;10c4;ea60;SONOFF;.*sonoff.*plus.*cc2674p10.*;
zstack;10c4;ea60;ITEAD;.*sonoff.*plus(($|[^_])|_($|[^vV])|_v($|[^2])|_v2($|[^_])).*;
zstack;0451;16c8;Texas Instruments;.*CC2538.*;
zstack;0451;16a8;Texas Instruments;.*CC2531.*;
zstack;0451;bef3;Texas Instruments;.*Texas_Instruments.*;
zstack;10c4;ea60;SMLIGHT;.*SLZB-07p7.*;
zstack;10c4;ea60;SMLIGHT;.*SMLIGHT_SLZB-06p7_.*;
zstack;10c4;ea60;SMLIGHT;.*SMLIGHT_SLZB-06p10_.*;
zstack;10c4;ea60;;.*tubeszb.*;
zstack;1a86;7523;;.*tubeszb.*;
zstack;1a86;7523;;.*zigstar.*;
zboss;2fe3;0100;ZEPHYR;.*ZEPHYR.*;
zigate;067b;2303;zigate_PL2303;.*zigate.*;
zigate;10c4;ea60;zigate_cp2102;.*zigate.*;
zigate;0403;6015;;.*zigate.*;
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

lower() {
    printf '%s' "$1" | tr '[:upper:]' '[:lower:]'
}

# coordinator_score VID PID MANUFACTURER NODE BY_ID: herdsman's best fingerprint for one port, as
# "score|adapter|options" (findUsbAdapterBestMatch on Linux): within an adapter type, vendor and
# product id must match, then the manufacturer scores 2, the by-id pattern 3, both 4 (the pattern
# after an earlier entry's manufacturer counts as both, as in herdsman); a CP210x (10c4:ea60)
# matched on an ITEAD manufacturer alone is not trusted; across types the highest score wins, the
# first type on a tie.
coordinator_score() {
    port_id=$(lower "$1:$2")
    port_manufacturer=$(lower "$3")
    conflict_prone=false
    [ "$port_id" != "10c4:ea60" ] || conflict_prone=true
    best="0||"
    type="" score=0 match_manufacturer="" match_options=""
    while IFS=';' read -r entry_type entry_vid entry_pid entry_manufacturer entry_pattern entry_options; do
        [ -n "$entry_type" ] || continue
        if [ "$entry_type" != "$type" ]; then
            coordinator_type_done
            type=$entry_type score=0 match_manufacturer="" match_options=""
        fi
        [ "$score" -lt 4 ] && [ "$entry_vid:$entry_pid" = "$port_id" ] || continue
        if [ "$score" -lt 2 ] && [ -n "$entry_manufacturer" ] && [ -n "$port_manufacturer" ] &&
            [ "$(lower "$entry_manufacturer")" = "$port_manufacturer" ]; then
            score=2 match_manufacturer=$entry_manufacturer match_options=$entry_options
        fi
        if [ "$score" -lt 3 ] && [ -n "$entry_pattern" ] &&
            printf '%s\n%s\n' "$4" "$5" | grep -Eiq -e "$entry_pattern"; then
            if [ "$score" = 2 ]; then score=4; else score=3; fi
            match_manufacturer=$entry_manufacturer match_options=$entry_options
        fi
    done <<TABLE
$COORDINATORS
TABLE
    coordinator_type_done
    echo "$best"
}

# The end of one adapter type's entries in coordinator_score: its match replaces the best so far
# only with a higher score.
coordinator_type_done() {
    [ "$score" -ge 2 ] || return 0
    if [ "$conflict_prone" = true ] && [ "$score" -lt 3 ] && [ "$(lower "$match_manufacturer")" = itead ]; then
        return 0
    fi
    [ "$score" -gt "${best%%|*}" ] || return 0
    best="$score|$type|$match_options"
}

# coordinator_find: "node|adapter|options" of the coordinator plugged in, chosen among the ports as
# herdsman chooses (the best score; the first node in name order on a tie). Unlike herdsman, a stick
# matched on vendor, product and manufacturer alone (score 2) is never taken: this container sees
# every USB serial adapter of the device, and a meter cable on a CP2102 says "Silicon Labs" just as
# a coordinator does. Every stick herdsman lists is also matched by its by-id pattern.
coordinator_find() {
    found_score=0 found=""
    for sys in "$usb_sysfs_tty"/ttyACM* "$usb_sysfs_tty"/ttyUSB*; do
        [ -r "$sys/dev" ] || continue
        device=$(usb_device_dir "$sys")
        [ -n "$device" ] || continue
        node="$usb_dev/${sys##*/}"
        result=$(coordinator_score "$(usb_attr "$device" idVendor)" "$(usb_attr "$device" idProduct)" \
            "$(usb_attr "$device" manufacturer)" "$node" "$(usb_by_id_name "$sys")")
        if [ "${result%%|*}" -ge 3 ] && [ "${result%%|*}" -gt "$found_score" ]; then
            found_score=${result%%|*} found="$node|${result#*|}"
        fi
    done
    [ -n "$found" ] && echo "$found"
}

# Without a ZIGBEE_ADAPTER, take the coordinator plugged in, with herdsman's adapter type (unless
# ZIGBEE_ADAPTER_TYPE says otherwise) and serial options: Zigbee2MQTT's own discovery cannot see
# the sticks' USB details inside this container (no udev database), so it would not add them.
choose_adapter() {
    # only where DEV_DIR says where /dev is (the image's ENV): never a native run's own /dev
    if [ "$(id -u)" = 0 ] && [ -n "${DEV_DIR:-}" ]; then usb_serial_sync; fi
    [ -z "${ZIGBEE_ADAPTER:-}" ] || return 0
    found=$(coordinator_find) || return 0
    ADAPTER=${found%%|*}
    found=${found#*|}
    if [ -z "${ZIGBEE_ADAPTER_TYPE:-}" ]; then
        ADAPTER_TYPE=${found%%|*}
        ADAPTER_OPTIONS=${found#*|}
    fi
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
