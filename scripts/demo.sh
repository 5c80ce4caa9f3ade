#!/usr/bin/env bash
# `make demo`: the whole appliance natively, under supervisord, on 127.0.0.1: the release minus
# containers. Every service starts through the release's own entrypoint and configuration:
#   Mosquitto through services/mosquitto/entrypoint.sh (its users, ACL and generated passwords),
#   the bridge through services/meter-bridge/entrypoint.sh (simulated meters of one household:
#   grid, solar, heat pump, EV), Home Assistant (the version services/homeassistant/Dockerfile
#   pins, .cache/ha/bin/hass, onboarded with a generated owner) after the release's seeding step
#   (services/homeassistant/hems_seed.py: HEMS packages and integration, MQTT, HTTP settings; the
#   integration wires the Energy dashboard from the meters' roles),
#   nginx through nginx/entrypoint.sh on https://127.0.0.1:8443 (generated certificate) and
#   hass-configurator behind it.
# Once Home Assistant is up, a week of the simulated household is written into its long-term
# statistics (scripts/demo_backfill.py), so the Energy dashboard has charts at once.
# Then a live view of the readings. Ctrl-C, or `scripts/demo.sh stop` (`make demo-stop`),
# stops everything (supervisorctl shutdown). Running it again reuses the installed HA, the
# passwords, the certificate and Home Assistant's data in $DEMO_DIR.
#
# Non-interactive use (tests): DEMO_SECONDS=N watches N seconds then stops; DEMO_DETACH=1
# waits until Home Assistant is onboarded and has the week of history, prints the banner and
# leaves the stack running.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DEMO=$(realpath -m "${DEMO_DIR:-.demo}")
VENV=$(realpath -m "${VENV:-.venv}")
HASS=$(realpath -m "${HASS:-.cache/ha/bin/hass}")
MQTT_PORT=${DEMO_MQTT_PORT:-18883}
HEALTH_PORT=${DEMO_HEALTH_PORT:-18099}
HA_PORT=${DEMO_HA_PORT:-18123}
CONFIGURATOR_PORT=${DEMO_CONFIGURATOR_PORT:-13218}
HTTPS_PORT=${DEMO_HTTPS_PORT:-8443}
HTTP_PORT=${DEMO_HTTP_PORT:-18080}
SUPERVISORCTL=("$VENV/bin/supervisorctl" -c "$DEMO/supervisord.conf")

# Pre-flight: every port above must be free on 127.0.0.1. A taken one would make its service
# crash-loop under supervisord ("Address already in use" in a log nobody reads) while the rest
# looks fine; instead, name the port and its holder and start nothing (scripts/demo_ports.py).
check_ports() {
    "$VENV/bin/python" "$REPO/scripts/demo_ports.py" DEMO_MQTT_PORT="$MQTT_PORT" DEMO_HEALTH_PORT="$HEALTH_PORT" \
        DEMO_HA_PORT="$HA_PORT" DEMO_CONFIGURATOR_PORT="$CONFIGURATOR_PORT" DEMO_HTTPS_PORT="$HTTPS_PORT" \
        DEMO_HTTP_PORT="$HTTP_PORT"
}

stop() {
    # the background join of the backfilled week (DEMO_DETACH), if it is still waiting
    local join_pid
    join_pid=$(cat "$DEMO/backfill-join.pid" 2>/dev/null || true)
    if [[ -n $join_pid ]] && grep -qs demo_backfill.py "/proc/$join_pid/cmdline"; then
        kill "$join_pid" 2>/dev/null || true
    fi
    rm -f "$DEMO/backfill-join.pid"
    if [[ -S "$DEMO/supervisor.sock" ]] && "${SUPERVISORCTL[@]}" pid >/dev/null 2>&1; then
        local pid
        pid=$("${SUPERVISORCTL[@]}" pid)
        "${SUPERVISORCTL[@]}" shutdown >/dev/null 2>&1 || true
        # shutdown returns before the programs are down: wait for supervisord itself
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
}

if [[ "${1:-}" == "stop" ]]; then
    stop
    echo "demo stopped"
    exit 0
fi

[[ -x "$HASS" ]] || {
    echo "demo: $HASS is missing: run make setup-ha" >&2
    exit 1
}
stop
check_ports || exit 1
# mqtt/share/<consumer>: what the release mounts as each consumer's credentials volume
# shelly-identities: the volume the bridge writes each provisioned Shelly's MQTT identity into and
# the broker reads them from
mkdir -p "$DEMO/logs" "$DEMO/ha" "$DEMO/nginx" "$DEMO/bridge" "$DEMO/mqtt/share/bridge" "$DEMO/mqtt/share/homeassistant" \
    "$DEMO/shelly-identities"
MQTT_SHARE=$DEMO/mqtt/share
# Run as root, every entrypoint drops to its image's user, as on a device (scripts/image-users.tsv:
# the same uids; Debian's own `mosquitto` has other ids, so the image's is named hems-mosquitto
# here). Those users reach their own directories only: $DEMO can be passed through (0711), its
# files (secrets, supervisord.conf, logs) stay root's. As another user nothing drops.
image_user() { awk -v s="$1" '$1 == s { print $7 }' "$REPO/scripts/image-users.tsv"; }
# can_run_as USER: whether USER exists and can reach $DEMO and run the bridge's Python in $VENV
# (`make setup` run as root creates the users and opens the way to this checkout).
# shellcheck disable=SC2016 # $1 and $2 below are the inner shell's arguments
can_run_as() {
    id -u "$1" >/dev/null 2>&1 &&
        setpriv --reuid="$1" --regid="$(id -g "$1")" --clear-groups sh -c 'test -x "$1" && "$2" -c ""' - "$DEMO" \
            "$VENV/bin/python" 2>/dev/null
}
if [[ $(id -u) -eq 0 ]]; then
    MOSQUITTO_USER=$(image_user mqtt) NGINX_USER=$(image_user nginx) BRIDGE_USER=$(image_user meter-bridge)
    chmod 711 "$DEMO"
    for user in "$MOSQUITTO_USER" "$NGINX_USER" "$BRIDGE_USER"; do
        if ! can_run_as "$user"; then
            echo "demo: user $user cannot reach $DEMO or run $VENV/bin/python (run \`make setup\` as root first," \
                "or set DEMO_DIR to a directory other users can pass); the services run as root this time" >&2
            MOSQUITTO_USER=root NGINX_USER=root BRIDGE_USER=root
            break
        fi
    done
    chmod 700 "$DEMO/logs" "$DEMO/ha"
    # nginx's data volume as the engine makes it (root, 0755): its workers read the htpasswd there
    mkdir -p "$DEMO/nginx/data"
    # the bridge writes each provisioned Shelly's identity there (the broker's watcher reads it as root)
    chown "$BRIDGE_USER:" "$DEMO/shelly-identities"
else
    MOSQUITTO_USER=root NGINX_USER=root BRIDGE_USER=root
    chmod 700 "$DEMO"
fi

# Secrets: generated once, kept in $DEMO (0600) for the next run; never a default password.
# The broker's users get theirs from Mosquitto's entrypoint (in $DEMO/mqtt), as in the release.
new_secret() {
    local file=$DEMO/$1
    if [[ ! -s "$file" ]]; then
        (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(18))' >"$file")
        return 0
    fi
    return 1
}
new_secret proxy_password || true
ha_password_is_new=no
new_secret ha_password && ha_password_is_new=yes

# --- the bridge -----------------------------------------------------------------------------
# One simulated household (same seed): the grid meter reads house + heat pump + EV - solar at
# every instant. The heat pump is a metered relay on the appliance (a Shelly); a Shelly simulator
# can replace its `simulated` source here later (type: shelly, host: 127.0.0.1:PORT) without
# anything else changing: the entity ids stay sensor.hems_heat_pump_*. The simulated counters start
# at 0 on every start of the bridge, like a meter whose counter restarted: the bridge's totals rule
# (`totals`, its state in the demo's folder as on the appliance's data volume) continues each total
# from where it was, so HA sees one counter that never falls.
cat >"$DEMO/bridge/config.yaml" <<'CONF'
site: {id: demo, name: Demo home, currency: GBP}
mqtt:
  host: 127.0.0.1
  port: ${DEMO_MQTT_PORT}
  username: bridge
  password: ${MQTT_PASSWORD}
health:
  port: ${DEMO_HEALTH_PORT}
# the release records a 5-minute step; the demo a 1-minute one, so its history moves while you watch
homeassistant: {min_interval_s: 2, recorded_interval_s: 60}
totals: {path: "${DEMO_STATE_DIR}/bridge/totals.json"}
sources:
  - {type: simulated, id: grid, name: Grid, profile: grid, seed: 1, interval_s: 2,
     pv_peak_w: 3500, heat_pump_w: 2500, ev_w: 7200}
  - {type: simulated, id: solar, name: Solar, profile: solar, seed: 1, interval_s: 2, rated_w: 3500}
  - {type: simulated, id: heat_pump, name: Heat pump, profile: heat_pump, seed: 1, interval_s: 2, rated_w: 2500}
  - {type: simulated, id: ev, name: EV charger, profile: ev, seed: 1, interval_s: 2, rated_w: 7200}
# Roles (issue 26): each meter's role and name are entities on its HA device, and the release's hems
# integration wires the Energy dashboard and writes the HEMS dashboard from them, as in a release
# home. Simulated meters say nothing of what they measure: the operator's role rules propose it.
# Nothing is looked for (a workstation has no meters to find).
discovery:
  emu2: false
  zigbee2mqtt: false
  shelly: false
  tasmota: false
  glow: false
  roles_path: ${DEMO_STATE_DIR}/meters.json
  role_rules:
    - {meter: grid, role: grid}
    - {meter: solar, role: solar}
    - {meter: heat_pump, role: heat_pump}
    - {meter: ev, role: ev_charger}
# Demand response: the "HEMS Flex" controls in HA. The heat pump's relay is switched over an
# MQTT command topic here (on the appliance: a Shelly channel, `type: shelly`), under the
# bridge's own hems/ prefix: the release's ACL lets the bridge write nowhere else.
flex:
  enabled: true
  site_meter_id: grid
  state_path: ${DEMO_STATE_DIR}/flex-state.json
  log_path: ${DEMO_STATE_DIR}/logs/flex-events.jsonl
  assets:
    - id: heat_pump
      name: Heat pump
      kind: heat_pump
      rated_power_w: 2500
      meter_id: heat_pump
      actuator: {type: mqtt, command_topic: hems/demo/heat_pump/relay/set}
CONF

# --- Home Assistant -------------------------------------------------------------------------
# configuration.yaml is the demo's own (rewritten each run): the shipped one loads
# default_config, whose discovery, cloud and alert integrations reach the network; here only
# what the appliance's pages need. No `http:`: the release's seeding step (hems_seed.py, run at
# every start of the homeassistant program below, as the image's entrypoint does) writes HA's
# stored HTTP settings (127.0.0.1 only, nginx trusted), installs the HEMS package, dashboard and
# integration, and pre-seeds the MQTT integration; the hems integration wires the Energy dashboard
# from the meters' roles. InfluxDB is not part of the demo.
cat >"$DEMO/ha/configuration.yaml" <<CONF
# Written by scripts/demo.sh on every run; edit ha-config/ instead.
homeassistant:
  name: HEMS demo
  latitude: 51.5
  longitude: -0.12
  elevation: 0
  unit_system: metric
  currency: GBP
  country: GB
  time_zone: Europe/London
  packages:
    hems: !include packages/hems.yaml
frontend:
config:
energy:
history:
logbook:
person:
logger:
  default: warning
CONF
"$VENV/bin/python" "$REPO/scripts/ha_onboard.py" --mark-other-steps-done --config-dir "$DEMO/ha"

# --- supervisord ----------------------------------------------------------------------------
# Secrets are read from their files by the one program that needs each, never written here.
cat >"$DEMO/supervisord.conf" <<CONF
[unix_http_server]
file=$DEMO/supervisor.sock
chmod=0700

[supervisord]
logfile=$DEMO/logs/supervisord.log
pidfile=$DEMO/supervisord.pid
childlogdir=$DEMO/logs
directory=$DEMO

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$DEMO/supervisor.sock

[program:mosquitto]
command=sh $REPO/services/mosquitto/entrypoint.sh
environment=MOSQUITTO_CONFIG_DIR="$DEMO/mqtt/config",MOSQUITTO_DATA_DIR="$DEMO/mqtt/data",MQTT_SHARE_DIR="$MQTT_SHARE",MQTT_SHELLY_IDENTITIES_DIR="$DEMO/shelly-identities",MOSQUITTO_LISTEN_ADDRESS="127.0.0.1",MOSQUITTO_PORT="$MQTT_PORT",MOSQUITTO_RUN_USER="$MOSQUITTO_USER",MOSQUITTO_BIN="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
priority=10
autorestart=true
redirect_stderr=true
stdout_logfile=$DEMO/logs/mosquitto.log

# the workstation's environment, as the other programs get it; BRIDGE_CONFIG emptied: one exported
# while trying a release's config would replace the demo's
[program:bridge]
command=sh $REPO/services/meter-bridge/entrypoint.sh run
environment=PATH="$VENV/bin:$PATH",BRIDGE_CONFIG="",BRIDGE_CONFIG_FILE="$DEMO/bridge/config.yaml",BRIDGE_RUN_USER="$BRIDGE_USER",MQTT_PASSWORD_FILE="$MQTT_SHARE/bridge/password",SHELLY_IDENTITIES_DIR="$DEMO/shelly-identities",DEMO_MQTT_PORT="$MQTT_PORT",DEMO_HEALTH_PORT="$HEALTH_PORT",DEMO_STATE_DIR="$DEMO/bridge"
priority=20
autorestart=true
startsecs=2
redirect_stderr=true
stdout_logfile=$DEMO/logs/bridge.log

[program:homeassistant]
command=bash -c '"$VENV/bin/python" "$REPO/services/homeassistant/hems_seed.py" --wait 120 2>>"$DEMO/logs/seed.log" || echo "seeding failed: see $DEMO/logs/seed.log"; exec "$HASS" --config "$DEMO/ha" --skip-pip --log-no-color'
environment=HEMS_SEED_SOURCE="$REPO/ha-config",HA_CONFIG_DIR="$DEMO/ha",HA_MQTT_BROKER="127.0.0.1",HA_MQTT_PORT="$MQTT_PORT",MQTT_PASSWORD_FILE="$MQTT_SHARE/homeassistant/password",HA_HTTP_SERVER_HOST="127.0.0.1",HA_HTTP_SERVER_PORT="$HA_PORT",HA_HTTP_TRUSTED_PROXIES="127.0.0.1,::1"
priority=30
autorestart=true
stopwaitsecs=30
redirect_stderr=true
stdout_logfile=$DEMO/logs/homeassistant.log

[program:configurator]
command=$VENV/bin/hass-configurator
environment=HC_BASEPATH="$DEMO/ha",HC_ENFORCE_BASEPATH="true",HC_LISTENIP="127.0.0.1",HC_PORT="$CONFIGURATOR_PORT",HC_ALLOWED_NETWORKS="127.0.0.0/8",HC_HASS_API="none",HC_DIRSFIRST="true",HC_HIDEHIDDEN="true"
priority=40
autorestart=true
redirect_stderr=true
stdout_logfile=$DEMO/logs/configurator.log

[program:nginx]
command=bash -c 'PROXY_ADMIN_PASSWORD=\$(cat $DEMO/proxy_password) exec sh $REPO/nginx/entrypoint.sh'
environment=NGINX_TEMPLATE="$REPO/nginx/nginx.conf.template",NGINX_CONF_FILE="$DEMO/nginx/nginx.conf",NGINX_DATA_DIR="$DEMO/nginx/data",NGINX_RUN_DIR="$DEMO/nginx/run",NGINX_RUN_USER="$NGINX_USER",NGINX_MIME_TYPES="/etc/nginx/mime.types",NGINX_LISTEN_ADDRESS="127.0.0.1",NGINX_HTTP_PORT="$HTTP_PORT",NGINX_HTTPS_PORT="$HTTPS_PORT",NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)",NGINX_UPSTREAM_HOMEASSISTANT="127.0.0.1:$HA_PORT",NGINX_UPSTREAM_CONFIGURATOR="127.0.0.1:$CONFIGURATOR_PORT",TLS_HOSTNAME="localhost",PROXY_ADMIN_USER="admin"
priority=50
autorestart=true
redirect_stderr=true
stdout_logfile=$DEMO/logs/nginx.log
CONF
chmod 600 "$DEMO/supervisord.conf"

"$VENV/bin/supervisord" -c "$DEMO/supervisord.conf"
# the background onboarding and backfill (interactive use) go too: they would wait for a dead HA
helpers_pid=
stop_helpers() {
    if [[ -n $helpers_pid ]]; then
        kill $(pgrep -P "$helpers_pid") "$helpers_pid" 2>/dev/null || true
    fi
}
trap 'stop_helpers; stop; echo; echo "demo stopped"' EXIT
trap 'exit 0' INT TERM

# Home Assistant takes 10-60 s to start; onboarding waits for it, then the backfill waits for the
# meters' first recorded states and writes the week; its --join waits (up to 8 minutes) for the
# recorder's first 5-minute statistics to join them to the week. The live view starts at once.
onboard=("$VENV/bin/python" "$REPO/scripts/ha_onboard.py" --url "http://127.0.0.1:$HA_PORT"
    --username hems --password-file "$DEMO/ha_password" --token-file "$DEMO/ha_token")
backfill=(env DEMO_MQTT_PORT="$MQTT_PORT" DEMO_HEALTH_PORT="$HEALTH_PORT" DEMO_STATE_DIR="$DEMO" MQTT_PASSWORD=unused
    "$VENV/bin/python" "$REPO/scripts/demo_backfill.py" --url "http://127.0.0.1:$HA_PORT"
    --token-file "$DEMO/ha_token" --bridge-config "$DEMO/bridge/config.yaml")
if [[ -n "${DEMO_DETACH:-}" ]]; then
    "${onboard[@]}" >>"$DEMO/logs/onboard.log" 2>&1 || {
        echo "demo: onboarding Home Assistant failed:" >&2
        tail -n 20 "$DEMO/logs/onboard.log" "$DEMO/logs/homeassistant.log" >&2
        exit 1
    }
    "${backfill[@]}" >>"$DEMO/logs/backfill.log" 2>&1 || {
        echo "demo: writing the week of history failed:" >&2
        tail -n 20 "$DEMO/logs/backfill.log" >&2
        exit 1
    }
    nohup "${backfill[@]}" --join >>"$DEMO/logs/backfill.log" 2>&1 &
    echo $! >"$DEMO/backfill-join.pid"
else
    {
        "${onboard[@]}" >>"$DEMO/logs/onboard.log" 2>&1 &&
            "${backfill[@]}" >>"$DEMO/logs/backfill.log" 2>&1 &&
            "${backfill[@]}" --join >>"$DEMO/logs/backfill.log" 2>&1
    } &
    helpers_pid=$!
fi

if [[ $ha_password_is_new == yes ]]; then
    ha_login="user hems  password $(cat "$DEMO/ha_password")   (shown once; kept in $DEMO/ha_password)"
else
    ha_login="user hems  password in $DEMO/ha_password"
fi
cat <<INFO
HEMS demo (supervisord: ${SUPERVISORCTL[*]} status)
  Home Assistant  https://127.0.0.1:$HTTPS_PORT/          $ha_login
                  (self-signed certificate: $DEMO/nginx/data/tls/cert.pem; HA itself on http://127.0.0.1:$HA_PORT)
                  the Energy dashboard shows the household's last week once HA is up (about a minute)
  Energy          https://127.0.0.1:$HTTPS_PORT/energy    HEMS dashboard  https://127.0.0.1:$HTTPS_PORT/hems-energy
  Configurator    https://127.0.0.1:$HTTPS_PORT/configurator/   user admin  password in $DEMO/proxy_password
  MQTT broker     127.0.0.1:$MQTT_PORT   the release's users and ACL; passwords in $MQTT_SHARE/<user>/password
  Bridge health   http://127.0.0.1:$HEALTH_PORT/healthz
  Logs            $DEMO/logs/
Ctrl-C or make demo-stop stops everything.
INFO

if [[ -n "${DEMO_DETACH:-}" ]]; then
    trap - EXIT
    exit 0
fi
# the broker's entrypoint writes the bridge's password when it first starts
for _ in $(seq 100); do
    [[ -s "$MQTT_SHARE/bridge/password" ]] && break
    sleep 0.1
done
export MQTT_PASSWORD DEMO_MQTT_PORT=$MQTT_PORT DEMO_HEALTH_PORT=$HEALTH_PORT DEMO_STATE_DIR=$DEMO
MQTT_PASSWORD=$(cat "$MQTT_SHARE/bridge/password")
# the live view's status lines say when the broker or Home Assistant is down, and when it is back
"$VENV/bin/meter-bridge" watch --config "$DEMO/bridge/config.yaml" --ha-url "http://127.0.0.1:$HA_PORT" \
    ${DEMO_SECONDS:+--seconds "$DEMO_SECONDS"}
