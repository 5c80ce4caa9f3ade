#!/usr/bin/env bash
# `make demo`: the whole appliance natively, under supervisord, on 127.0.0.1:
#   Mosquitto (authentication on, generated passwords), the bridge with simulated grid (with
#   PV), solar, heat-pump and EV meters, Home Assistant 2024.3.3 (.cache/ha-venv, onboarded
#   with a generated owner, MQTT pre-configured, the HEMS packages of ha-config/), nginx on
#   https://127.0.0.1:8443 (generated certificate) and hass-configurator behind it.
# Then a live view of the readings. Ctrl-C, or `scripts/demo.sh stop` (`make demo-stop`),
# stops everything (supervisorctl shutdown). Running it again reuses the installed venvs, the
# passwords, the certificate and Home Assistant's data in $DEMO_DIR.
#
# Non-interactive use (tests): DEMO_SECONDS=N watches N seconds then stops; DEMO_DETACH=1
# waits until Home Assistant is onboarded, prints the banner and leaves the stack running.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

DEMO=$(realpath -m "${DEMO_DIR:-.demo}")
VENV=$(realpath -m "${VENV:-.venv}")
HA_VENV=$(realpath -m "${HA_VENV:-.cache/ha-venv}")
MQTT_PORT=${DEMO_MQTT_PORT:-18883}
HEALTH_PORT=${DEMO_HEALTH_PORT:-18099}
HA_PORT=${DEMO_HA_PORT:-18123}
CONFIGURATOR_PORT=${DEMO_CONFIGURATOR_PORT:-13218}
HTTPS_PORT=${DEMO_HTTPS_PORT:-8443}
HTTP_PORT=${DEMO_HTTP_PORT:-18080}
SUPERVISORCTL=("$VENV/bin/supervisorctl" -c "$DEMO/supervisord.conf")

stop() {
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

[[ -x "$HA_VENV/bin/hass" ]] || {
    echo "demo: $HA_VENV/bin/hass is missing: run make setup-ha" >&2
    exit 1
}
stop
mkdir -p "$DEMO/logs" "$DEMO/ha" "$DEMO/nginx"
chmod 700 "$DEMO"

# Secrets: generated once, kept in $DEMO (0600) for the next run; never a default password.
new_secret() {
    local file=$DEMO/$1
    if [[ ! -s "$file" ]]; then
        (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(18))' >"$file")
        return 0
    fi
    return 1
}
new_secret mqtt_password || true
new_secret mqtt_homeassistant_password || true
new_secret proxy_password || true
ha_password_is_new=no
new_secret ha_password && ha_password_is_new=yes

# --- Mosquitto ------------------------------------------------------------------------------
: >"$DEMO/passwd"
chmod 600 "$DEMO/passwd"
mosquitto_passwd -b "$DEMO/passwd" bridge "$(cat "$DEMO/mqtt_password")"
mosquitto_passwd -b "$DEMO/passwd" homeassistant "$(cat "$DEMO/mqtt_homeassistant_password")"
cat >"$DEMO/mosquitto.conf" <<CONF
per_listener_settings false
allow_anonymous false
password_file $DEMO/passwd
listener $MQTT_PORT 127.0.0.1
persistence false
log_dest stderr
user root
CONF

# --- the bridge -----------------------------------------------------------------------------
# Meters are simulated. The heat pump is a metered relay on the appliance (a Shelly); a Shelly
# simulator can replace its `simulated` source here later (type: shelly, host: 127.0.0.1:PORT)
# without anything else changing: the entity ids stay sensor.hems_heat_pump_*.
cat >"$DEMO/config.yaml" <<'CONF'
site: {id: demo, name: Demo home, currency: GBP}
mqtt:
  host: 127.0.0.1
  port: ${DEMO_MQTT_PORT}
  username: bridge
  password: ${MQTT_PASSWORD}
health:
  port: ${DEMO_HEALTH_PORT}
homeassistant: {min_interval_s: 2}
sources:
  - {type: simulated, id: grid, name: Grid, profile: grid, pv_peak_w: 3500, interval_s: 2, seed: 1}
  - {type: simulated, id: solar, name: Solar, profile: solar, rated_w: 3500, interval_s: 2, seed: 2}
  - {type: simulated, id: heat_pump, name: Heat pump, profile: heat_pump, interval_s: 2, seed: 3}
  - {type: simulated, id: ev, name: EV charger, profile: ev, interval_s: 2, seed: 4}
# Demand response: the "HEMS Flex" controls in HA. The heat pump's relay is switched over an
# MQTT command topic here (on the appliance: a Shelly channel, `type: shelly`).
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
      actuator: {type: mqtt, command_topic: demo/heat_pump/relay/set}
CONF

# --- Home Assistant -------------------------------------------------------------------------
# configuration.yaml is the demo's own (rewritten each run): the shipped one loads
# default_config, whose discovery, cloud and alert integrations reach the network; here only
# what the appliance's pages need, bound to 127.0.0.1. The HEMS package and dashboard are the
# shipped files, installed by the release's own seeding step (hems_seed.py), which also
# pre-seeds the MQTT integration and the Energy dashboard. InfluxDB is not part of the demo.
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
http:
  server_host: 127.0.0.1
  server_port: $HA_PORT
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
HEMS_SEED_SOURCE="$REPO/ha-config" HA_CONFIG_DIR="$DEMO/ha" HA_MQTT_PORT=$MQTT_PORT \
    MQTT_PASSWORD_FILE="$DEMO/mqtt_homeassistant_password" \
    "$VENV/bin/python" "$REPO/services/homeassistant/hems_seed.py" 2>>"$DEMO/logs/seed.log"

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
command=mosquitto -c $DEMO/mosquitto.conf
priority=10
autorestart=true
redirect_stderr=true
stdout_logfile=$DEMO/logs/mosquitto.log

[program:bridge]
command=bash -c 'MQTT_PASSWORD=\$(cat $DEMO/mqtt_password) exec $VENV/bin/meter-bridge run --config $DEMO/config.yaml'
environment=DEMO_MQTT_PORT="$MQTT_PORT",DEMO_HEALTH_PORT="$HEALTH_PORT",DEMO_STATE_DIR="$DEMO"
priority=20
autorestart=true
startsecs=2
redirect_stderr=true
stdout_logfile=$DEMO/logs/bridge.log

[program:homeassistant]
command=$HA_VENV/bin/hass --config $DEMO/ha --skip-pip --log-no-color
priority=30
autorestart=true
stopwaitsecs=30
redirect_stderr=true
stdout_logfile=$DEMO/logs/homeassistant.log

[program:configurator]
command=$VENV/bin/hass-configurator
environment=HC_BASEPATH="$DEMO/ha",HC_ENFORCE_BASEPATH="true",HC_LISTENIP="127.0.0.1",HC_PORT="$CONFIGURATOR_PORT",HC_ALLOWED_NETWORKS="127.0.0.0/8",HC_HASS_API="none",HC_DIRSFIRST="true"
priority=40
autorestart=true
redirect_stderr=true
stdout_logfile=$DEMO/logs/configurator.log

[program:nginx]
command=bash -c 'PROXY_ADMIN_PASSWORD=\$(cat $DEMO/proxy_password) exec sh $REPO/nginx/entrypoint.sh'
environment=NGINX_TEMPLATE="$REPO/nginx/nginx.conf.template",NGINX_CONF_FILE="$DEMO/nginx/nginx.conf",NGINX_DATA_DIR="$DEMO/nginx/data",NGINX_RUN_DIR="$DEMO/nginx/run",NGINX_RUN_USER="root",NGINX_MIME_TYPES="/etc/nginx/mime.types",NGINX_LISTEN_ADDRESS="127.0.0.1",NGINX_HTTP_PORT="$HTTP_PORT",NGINX_HTTPS_PORT="$HTTPS_PORT",NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)",NGINX_UPSTREAM_HOMEASSISTANT="127.0.0.1:$HA_PORT",NGINX_UPSTREAM_CONFIGURATOR="127.0.0.1:$CONFIGURATOR_PORT",TLS_HOSTNAME="localhost",PROXY_ADMIN_USER="admin"
priority=50
autorestart=true
redirect_stderr=true
stdout_logfile=$DEMO/logs/nginx.log
CONF
chmod 600 "$DEMO/supervisord.conf"

"$VENV/bin/supervisord" -c "$DEMO/supervisord.conf"
trap 'stop; echo; echo "demo stopped"' EXIT
trap 'exit 0' INT TERM

# Home Assistant takes 10-60 s to start; onboarding waits for it. The live view starts at once.
onboard=("$VENV/bin/python" "$REPO/scripts/ha_onboard.py" --url "http://127.0.0.1:$HA_PORT"
    --username hems --password-file "$DEMO/ha_password" --token-file "$DEMO/ha_token")
if [[ -n "${DEMO_DETACH:-}" ]]; then
    "${onboard[@]}" >>"$DEMO/logs/onboard.log" 2>&1 || {
        echo "demo: onboarding Home Assistant failed:" >&2
        tail -20 "$DEMO/logs/onboard.log" "$DEMO/logs/homeassistant.log" >&2
        exit 1
    }
else
    "${onboard[@]}" >>"$DEMO/logs/onboard.log" 2>&1 &
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
  Energy          https://127.0.0.1:$HTTPS_PORT/energy    HEMS dashboard  https://127.0.0.1:$HTTPS_PORT/hems-energy
  Configurator    https://127.0.0.1:$HTTPS_PORT/configurator/   user admin  password in $DEMO/proxy_password
  MQTT broker     127.0.0.1:$MQTT_PORT   users bridge / homeassistant, passwords in $DEMO/mqtt_*password
  Bridge health   http://127.0.0.1:$HEALTH_PORT/healthz
  Logs            $DEMO/logs/
Ctrl-C or make demo-stop stops everything.
INFO

if [[ -n "${DEMO_DETACH:-}" ]]; then
    trap - EXIT
    exit 0
fi
export MQTT_PASSWORD DEMO_MQTT_PORT=$MQTT_PORT DEMO_HEALTH_PORT=$HEALTH_PORT DEMO_STATE_DIR=$DEMO
MQTT_PASSWORD=$(cat "$DEMO/mqtt_password")
"$VENV/bin/meter-bridge" watch --config "$DEMO/config.yaml" ${DEMO_SECONDS:+--seconds "$DEMO_SECONDS"}
