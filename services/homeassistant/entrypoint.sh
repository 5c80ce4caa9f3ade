#!/bin/sh
# Seed /config from the files this release owns (hems_seed.py), then start Home Assistant's own
# init (s6-overlay). A seeding failure is logged but never keeps Home Assistant from starting.
set -eu
python3 /usr/local/bin/hems_seed.py || echo "homeassistant-entrypoint: seeding /config failed (see above)" >&2
# packages/influxdb.yaml reads the scoped token influx-provision wrote (`!env_var INFLUXDB_TOKEN`);
# s6-overlay hands /init's environment to Home Assistant.
token_file=/influx-tokens/homeassistant.token
if [ -z "${INFLUXDB_TOKEN:-}" ] && [ -r "$token_file" ]; then
    INFLUXDB_TOKEN=$(cat "$token_file")
    export INFLUXDB_TOKEN
fi
exec /init "$@"
