#!/bin/sh
# WiFi repeater: when WIFI_REPEATER_ENABLED is on, keep a NetworkManager access point
# (802-11-wireless.mode ap, ipv4.method shared: NAT + DHCP to the uplink) on AP_INTERFACE with
# AP_SSID and a WPA2 AP_PASSWORD of 8 to 63 characters; when off, remove it. nmcli talks to the
# host's NetworkManager over D-Bus (DBUS_SYSTEM_BUS_ADDRESS, io.balena.features.dbus).
#
#   repeater.sh           run (validate, set up, then watch the connection)
#   repeater.sh --once    validate and set up, then exit (used by the tests)
#   repeater.sh health    the container's healthcheck: says whether the access point is active and
#                         exits 0 (liveness only: a restart does not bring back a missing WiFi
#                         adapter, and the watch loop below re-activates the connection itself)
set -eu

connection=hems-ap
interface=${AP_INTERFACE:-wlan1}
band=${AP_BAND:-bg}

log() { echo "wifi-repeater: $*" >&2; }
fail() {
    log "$*"
    exit 2
}

enabled() {
    case "$(printf '%s' "${WIFI_REPEATER_ENABLED:-false}" | tr '[:upper:]' '[:lower:]')" in
        1 | true | yes | on) return 0 ;;
        0 | false | no | off | "") return 1 ;;
        *) fail "WIFI_REPEATER_ENABLED must be true or false, not '${WIFI_REPEATER_ENABLED}'" ;;
    esac
}

validate() {
    ssid=${AP_SSID:-}
    password=${AP_PASSWORD:-}
    [ -n "$ssid" ] || fail "AP_SSID is required when WIFI_REPEATER_ENABLED is on"
    # byte length: an SSID is at most 32 octets
    [ "$(printf '%s' "$ssid" | wc -c)" -le 32 ] || fail "AP_SSID is longer than 32 bytes"
    [ -n "$password" ] || fail "AP_PASSWORD is required when WIFI_REPEATER_ENABLED is on (no open access point)"
    [ "${#password}" -ge 8 ] || fail "AP_PASSWORD must have at least 8 characters (WPA2)"
    [ "${#password}" -le 63 ] || fail "AP_PASSWORD must have at most 63 characters (WPA2 passphrase)"
    case "$band" in
        bg | a) ;;
        *) fail "AP_BAND must be bg (2.4 GHz) or a (5 GHz), not '$band'" ;;
    esac
}

active() {
    nmcli -g GENERAL.STATE connection show "$connection" 2>/dev/null | grep -q activated
}

set_up() {
    # Re-created on every start so that a changed variable always takes effect.
    nmcli connection delete "$connection" >/dev/null 2>&1 || true
    # The passphrase is on nmcli's command line, visible only inside this container.
    nmcli connection add type wifi ifname "$interface" con-name "$connection" autoconnect yes \
        ssid "$ssid" -- \
        802-11-wireless.mode ap 802-11-wireless.band "$band" \
        ipv4.method shared ipv6.method ignore \
        wifi-sec.key-mgmt wpa-psk wifi-sec.proto rsn wifi-sec.pairwise ccmp wifi-sec.group ccmp \
        wifi-sec.psk "$password" >/dev/null
    nmcli connection up "$connection" >/dev/null
    log "access point '$ssid' up on $interface"
}

tear_down() {
    if nmcli connection delete "$connection" >/dev/null 2>&1; then
        log "WIFI_REPEATER_ENABLED is off: removed the access point"
    fi
}

if [ "${1:-}" = health ]; then
    if ! enabled; then
        echo "wifi-repeater: off"
    elif active; then
        echo "wifi-repeater: access point active on $interface"
    else
        echo "wifi-repeater: access point not active on $interface (retried every 60 s)"
    fi
    exit 0
fi

if ! enabled; then
    tear_down
    log "off (set WIFI_REPEATER_ENABLED=true, AP_SSID and AP_PASSWORD to turn it on)"
    [ "${1:-}" = --once ] && exit 0
    # stay up, so that balena does not restart the service in a loop
    while :; do sleep 3600; done
fi

validate
set_up
[ "${1:-}" = --once ] && exit 0
while :; do
    sleep 60
    if ! active; then
        log "access point is not active: bringing it up again"
        nmcli connection up "$connection" >/dev/null 2>&1 || log "could not bring $connection up on $interface"
    fi
done
