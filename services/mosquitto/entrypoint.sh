#!/bin/sh
# Mosquitto entrypoint: make (once) and keep a password per service user, write the password
# file, the ACL and the broker config, hand each consumer its own credentials, then exec the
# broker. Idempotent: a restart re-renders everything from the persisted state.
#
# Passwords: a device/fleet variable MQTT_<USER>_PASSWORD wins; otherwise a random one made on
# first boot and kept in the data volume (never logged). Each consumer's password is written to
# $MQTT_SHARE_DIR/<user>/password, a directory that is a named volume mounted only by mqtt and
# by that consumer.
#
# Shelly devices: one MQTT user per device, confined to shelly/<device id>/#. `meter-bridge
# shelly provision` (meter-bridge container) writes <device id> -> password files into
# $MQTT_SHELLY_IDENTITIES_DIR, a volume mqtt mounts read-only; a watcher started here re-renders
# the password file and the ACL when that directory changes and sends the broker SIGHUP, which
# reloads both (clients whose user is gone are disconnected; the others stay connected).
set -eu

config_dir=${MOSQUITTO_CONFIG_DIR:-/mosquitto/config}
data_dir=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
share_dir=${MQTT_SHARE_DIR:-/run/hems/share}
listen_address=${MOSQUITTO_LISTEN_ADDRESS:-0.0.0.0}
port=${MOSQUITTO_PORT:-1883}
run_user=${MOSQUITTO_RUN_USER:-mosquitto}
secret_dir="$data_dir/secrets"
identities_dir=${MQTT_SHELLY_IDENTITIES_DIR:-/run/hems/shelly-identities}
identities_poll_s=${MQTT_SHELLY_IDENTITIES_POLL_S:-5}
case "$identities_poll_s" in
    '' | *[!0-9.]* | .* | *.*.*)
        echo "mqtt-entrypoint: MQTT_SHELLY_IDENTITIES_POLL_S must be a number of seconds" >&2
        exit 2
        ;;
esac
users="bridge homeassistant zigbee2mqtt healthcheck"
# Generic MQTT devices (Tasmota, ESPHome, OpenEVSE, DIY; the bridge's `type: mqtt`): one shared
# user `devices`, only when the operator sets its password (there is no one to hand a generated
# one to). It may write `devices/#` and Tasmota's default `tele/#` and `stat/#`, and read
# `cmnd/#` (Tasmota's commands), and announce itself on `tasmota/discovery/#`; the bridge reads those
# prefixes and nothing else of theirs.
if [ -n "${MQTT_DEVICES_PASSWORD:-}" ]; then
    users="$users devices"
fi

log() { echo "mqtt-entrypoint: $*" >&2; }

# Zigbee2MQTT's base topic (the release's Z2M_BASE_TOPIC, the same variable the zigbee2mqtt service
# and the bridge's default config read): its prefix in the ACL. A topic level of letters, digits,
# `_`, `-` and inner `/` only; anything else (a wildcard would open other prefixes) keeps the default.
z2m_base=${Z2M_BASE_TOPIC:-zigbee2mqtt}
case $z2m_base in
    /* | */ | *//* | *[!A-Za-z0-9_/-]*)
        log "Z2M_BASE_TOPIC '$z2m_base' is not a plain topic prefix: using zigbee2mqtt"
        z2m_base=zigbee2mqtt
        ;;
esac

umask 077
mkdir -p "$config_dir" "$data_dir" "$secret_dir"

random_password() {
    # 32 characters from [A-Za-z0-9] (~190 bits); no openssl in the image, /dev/urandom suffices.
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32
}

# The device variable for a user's password, e.g. MQTT_ZIGBEE2MQTT_PASSWORD.
override_for() {
    case "$1" in
        bridge) printf '%s' "${MQTT_BRIDGE_PASSWORD:-}" ;;
        homeassistant) printf '%s' "${MQTT_HOMEASSISTANT_PASSWORD:-}" ;;
        zigbee2mqtt) printf '%s' "${MQTT_ZIGBEE2MQTT_PASSWORD:-}" ;;
        devices) printf '%s' "${MQTT_DEVICES_PASSWORD:-}" ;;
        *) printf '' ;;
    esac
}

password_for() {
    user=$1
    override=$(override_for "$user")
    if [ -n "$override" ]; then
        case "$override" in
            *:* | *"
"*)
                log "the password variable for '$user' contains ':' or a newline, which Mosquitto cannot store"
                exit 2
                ;;
        esac
        if [ "${#override}" -lt 12 ]; then
            log "the password variable for '$user' is shorter than 12 characters: refusing it"
            exit 2
        fi
        printf '%s' "$override"
        return
    fi
    if [ ! -s "$secret_dir/$user" ]; then
        random_password >"$secret_dir/$user.tmp"
        mv "$secret_dir/$user.tmp" "$secret_dir/$user"
        log "generated a password for '$user' (first boot)"
    fi
    cat "$secret_dir/$user"
}

if [ -n "${MQTT_SHELLY_PASSWORD:-}" ]; then
    log "MQTT_SHELLY_PASSWORD is no longer used: each Shelly has its own MQTT user now; re-run" \
        "'meter-bridge shelly provision' for every device and delete the variable"
fi

# The Shelly identities provisioning wrote: "<device id> <password>" lines on stdout. The name
# must be a Shelly Gen2+ device id (so it can never be a service user) and the password 16-128
# characters of [A-Za-z0-9._~-]; anything else is logged and skipped, never fatal.
shelly_identities() {
    [ -d "$identities_dir" ] || return 0
    for file in "$identities_dir"/*; do
        [ -f "$file" ] || continue
        name=${file##*/}
        if ! printf '%s\n' "$name" | grep -Eqx 'shelly[a-z0-9]+-[0-9a-f]{12}'; then
            log "ignoring $file: not a Shelly device id"
            continue
        fi
        secret=$(cat "$file") || continue
        if ! printf '%s\n' "$secret" | grep -Eqx '[A-Za-z0-9._~-]{16,128}'; then
            log "ignoring $file: the password is not 16-128 characters of [A-Za-z0-9._~-]"
            continue
        fi
        printf '%s %s\n' "$name" "$secret"
    done
    unset secret
}

# What the watcher compares: names and checksums of the identity files (md5sum: busybox has it,
# not always cksum).
identities_fingerprint() {
    if [ -d "$identities_dir" ]; then
        for file in "$identities_dir"/*; do
            [ -f "$file" ] && printf '%s %s\n' "${file##*/}" "$(md5sum <"$file")"
        done
    fi
    return 0
}

# Check every service password (and make the missing ones) before rendering anything; called
# in this shell, not in a $(...) subshell, so a refused variable's `exit 2` ends the start here.
for user in $users; do
    password_for "$user" >/dev/null
done

passwd_file="$config_dir/passwd"
acl_file="$config_dir/acl"

# Password file and ACL, both from the service users and the Shelly identities read once. Every
# step checks its own result: the watcher calls this where `set -e` does not apply, and a
# half-rendered password file must never replace a good one.
render_security() {
    identities=$(shelly_identities)
    # plain "user:password" lines, hashed in place by mosquitto_passwd -U
    : >"$passwd_file.tmp" || return 1
    for user in $users; do
        secret=$(password_for "$user") || return 1
        printf '%s:%s\n' "$user" "$secret" >>"$passwd_file.tmp" || return 1
    done
    unset secret
    if [ -n "$identities" ]; then
        printf '%s\n' "$identities" | sed 's/ /:/' >>"$passwd_file.tmp" || return 1
    fi
    mosquitto_passwd -U "$passwd_file.tmp" || return 1

    # ACL: least privilege per user. Each Shelly device may use its own prefix
    # shelly/<device id> only (set by `meter-bridge shelly provision`): its notifications, its
    # `rpc` request topic and the replies it sends (the bridge's RPC `src` is
    # <prefix>/replies/<client>, so replies stay inside the device's prefix). So a device can
    # neither fake another's readings nor command another's relay. One stanza per device rather
    # than `pattern readwrite shelly/%u/#`: a pattern applies to every user, services included.
    # (Z2M_BASE below is Zigbee2MQTT's base topic, put in by sed: the heredoc is literal for $SYS)
    sed "s|^\(topic [a-z]*\) Z2M_BASE/#\$|\1 $z2m_base/#|" >"$acl_file.tmp" <<'ACL' || return 1
# generated by entrypoint.sh on every start and when a Shelly identity changes: edit the image,
# not this file
user bridge
topic readwrite hems/#
# its own discovery only (the `hems` node_id level), and HA's birth message
topic readwrite homeassistant/+/hems/#
topic read homeassistant/status
topic readwrite shelly/#
topic read Z2M_BASE/#
topic read glow/#
# generic MQTT devices (`type: mqtt`): only these prefixes
topic read devices/#
topic read tele/#
topic read stat/#
# Tasmota's own discovery (`type: tasmota`, found by default)
topic read tasmota/discovery/#

user homeassistant
topic readwrite homeassistant/#
topic readwrite hems/#
topic readwrite Z2M_BASE/#
topic read shelly/#

user zigbee2mqtt
topic readwrite Z2M_BASE/#
topic readwrite homeassistant/#

user healthcheck
topic read $SYS/broker/uptime
ACL
    case " $users " in
        *" devices "*)
            printf '\nuser devices\ntopic readwrite devices/#\ntopic write tele/#\ntopic write stat/#\ntopic write tasmota/discovery/#\ntopic read cmnd/#\n' \
                >>"$acl_file.tmp" || return 1
            ;;
    esac
    if [ -n "$identities" ]; then
        printf '%s\n' "$identities" | while read -r name _; do
            printf '\nuser %s\ntopic readwrite shelly/%s/#\n' "$name" "$name"
        done >>"$acl_file.tmp" || return 1
    fi
    shelly_count=$(printf '%s' "$identities" | grep -c . || true)
    unset identities
    chmod 0600 "$passwd_file.tmp" "$acl_file.tmp" || return 1
    if [ "$run_user" != root ] && [ "$(id -u)" = 0 ]; then
        chown "$run_user" "$passwd_file.tmp" "$acl_file.tmp" || return 1
    fi
    mv "$passwd_file.tmp" "$passwd_file" && mv "$acl_file.tmp" "$acl_file"
}
render_security

# Each consumer gets its username and password in its own shared directory (a volume that only
# it and mqtt mount).
share() {
    dir="$share_dir/$1"
    shift
    [ -d "$dir" ] || return 0 # consumer volume not mounted (e.g. service removed): nothing to hand over
    for user in "$@"; do
        password_for "$user" >"$dir/$user.tmp"
        mv "$dir/$user.tmp" "$dir/$user"
    done
    printf '%s' "$1" >"$dir/username"
    cp "$dir/$1" "$dir/password"
}
share bridge bridge
share homeassistant homeassistant
share zigbee2mqtt zigbee2mqtt
# the shared `shelly` password earlier releases handed to the bridge: no user has it any more
rm -f "$share_dir/bridge/shelly" "$secret_dir/shelly"

config_file="$config_dir/mosquitto.conf"
cat >"$config_file.tmp" <<CONF
# generated by entrypoint.sh on every start
per_listener_settings false
allow_anonymous false
password_file $passwd_file
acl_file $acl_file
listener $port $listen_address
persistence true
persistence_location $data_dir/
# SD card: write the in-memory database (the whole retained set, ~50 KB with 10 meters) once an
# hour, not every 5 minutes (docs/benchmarks.md, "Write budget"). A power cut loses at most an
# hour of retained changes, and every one of them is sent again: the bridge re-announces and
# re-publishes its states when it reconnects, Zigbee2MQTT and Shelly devices theirs. A clean stop
# saves it all.
autosave_interval 3600
# A subscriber that lags behind a burst (meter-bridge stops reading rather than drop) has
# up to 20,000 messages / 16 MiB queued here before Mosquitto drops any; its default of
# 1,000 also drops QoS 0 (tests/bench/bench_ingest.py).
max_queued_messages 20000
max_queued_bytes 16777216
log_dest stdout
log_type error
log_type warning
log_type notice
connection_messages true
user $run_user
CONF
mv "$config_file.tmp" "$config_file"

if [ "$run_user" != root ] && [ "$(id -u)" = 0 ]; then
    chown -R "$run_user" "$config_dir" "$data_dir"
fi
chmod 0700 "$config_dir" "$data_dir" "$secret_dir"

# The watcher: polls the identity files (a few small files; reads only, so no SD card wear) and,
# on a change, re-renders and signals the broker, which by then has this shell's PID (exec below).
# It ends when the broker does.
watch_identities() {
    broker=$1
    seen=$(identities_fingerprint)
    while sleep "$identities_poll_s"; do
        kill -0 "$broker" 2>/dev/null || exit 0
        now=$(identities_fingerprint)
        [ "$now" != "$seen" ] || continue
        if render_security; then
            seen=$now
            log "Shelly identities changed: $shelly_count device user(s); reloading"
            kill -HUP "$broker"
        else
            log "could not re-render the Shelly identities; keeping the previous ones"
        fi
    done
}
watch_identities $$ &

log "users: $users and $shelly_count Shelly device(s); anonymous access off; listening on $listen_address:$port"
exec "${MOSQUITTO_BIN:-/usr/sbin/mosquitto}" -c "$config_file"
