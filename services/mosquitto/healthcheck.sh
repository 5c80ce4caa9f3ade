#!/bin/sh
# Healthy when the broker accepts the healthcheck user and serves $SYS/broker/uptime to it.
set -eu
data_dir=${MOSQUITTO_DATA_DIR:-/mosquitto/data}
# shellcheck disable=SC2016 # \$SYS is a literal MQTT topic, not a shell variable
exec mosquitto_sub -h 127.0.0.1 -p "${MOSQUITTO_PORT:-1883}" -u healthcheck \
    -P "$(cat "$data_dir/secrets/healthcheck")" -t '$SYS/broker/uptime' -C 1 -W 5
