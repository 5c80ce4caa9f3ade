#!/usr/bin/env bash
# `make demo`: a private Mosquitto (authentication on, generated password) on 127.0.0.1
# and the bridge with simulated grid, solar, heat-pump and EV meters, then a live view
# of their readings. Ctrl-C, or `scripts/demo.sh stop`, stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=$(realpath -m "${DEMO_DIR:-.demo}")
VENV=${VENV:-.venv}
MQTT_PORT=${DEMO_MQTT_PORT:-18883}
HEALTH_PORT=${DEMO_HEALTH_PORT:-18099}

stop() {
    for name in bridge mosquitto; do
        if [[ -f "$DEMO/$name.pid" ]]; then
            kill "$(cat "$DEMO/$name.pid")" 2>/dev/null || true
            rm -f "$DEMO/$name.pid"
        fi
    done
}

if [[ "${1:-}" == "stop" ]]; then
    stop
    echo "demo stopped"
    exit 0
fi

stop
mkdir -p "$DEMO"
chmod 700 "$DEMO"
# Generated once, kept for the next run; never a default password.
if [[ ! -s "$DEMO/mqtt_password" ]]; then
    (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(18))' > "$DEMO/mqtt_password")
fi
MQTT_PASSWORD=$(cat "$DEMO/mqtt_password")
: > "$DEMO/passwd"
chmod 600 "$DEMO/passwd"
mosquitto_passwd -b "$DEMO/passwd" bridge "$MQTT_PASSWORD"
cat > "$DEMO/mosquitto.conf" <<CONF
per_listener_settings false
allow_anonymous false
password_file $DEMO/passwd
listener $MQTT_PORT 127.0.0.1
persistence false
log_dest file $DEMO/mosquitto.log
user root
CONF
cat > "$DEMO/config.yaml" <<'CONF'
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
CONF
export MQTT_PASSWORD DEMO_MQTT_PORT=$MQTT_PORT DEMO_HEALTH_PORT=$HEALTH_PORT

trap 'stop; echo; echo "demo stopped"' EXIT
trap 'exit 0' INT TERM
mosquitto -c "$DEMO/mosquitto.conf" 2>> "$DEMO/mosquitto.log" & echo $! > "$DEMO/mosquitto.pid"
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MQTT_PORT") 2>/dev/null && break
    if ! kill -0 "$(cat "$DEMO/mosquitto.pid")" 2>/dev/null; then
        echo "demo: mosquitto did not start:" >&2
        tail -5 "$DEMO/mosquitto.log" >&2
        exit 1
    fi
    sleep 0.1
done
"$VENV/bin/meter-bridge" run --config "$DEMO/config.yaml" >> "$DEMO/bridge.log" 2>&1 & echo $! > "$DEMO/bridge.pid"

cat <<INFO
meter-bridge demo
  MQTT broker  127.0.0.1:$MQTT_PORT  user bridge  password in $DEMO/mqtt_password
  health       http://127.0.0.1:$HEALTH_PORT/healthz   (or: $VENV/bin/meter-bridge status --config $DEMO/config.yaml)
  logs         $DEMO/bridge.log  $DEMO/mosquitto.log
Ctrl-C stops the demo.
INFO
"$VENV/bin/meter-bridge" watch --config "$DEMO/config.yaml" ${DEMO_SECONDS:+--seconds "$DEMO_SECONDS"}
