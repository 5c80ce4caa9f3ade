#!/bin/bash
# No default passwords: on first boot generate the admin password and admin token unless
# the fleet set them, keep them in the `influx-secrets` volume, then hand over to the
# official entrypoint (which runs setup only when no influxd.bolt exists yet).
set -euo pipefail
secrets=${INFLUX_SECRETS_DIR:-/influx-secrets}
mkdir -p "$secrets"
chmod 0700 "$secrets"
for name in admin.password admin.token; do
    if [[ ! -s "$secrets/$name" ]]; then
        (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$secrets/$name")
    fi
done
export DOCKER_INFLUXDB_INIT_PASSWORD=${DOCKER_INFLUXDB_INIT_PASSWORD:-$(cat "$secrets/admin.password")}
export DOCKER_INFLUXDB_INIT_ADMIN_TOKEN=${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN:-$(cat "$secrets/admin.token")}
export DOCKER_INFLUXDB_INIT_RETENTION=${INFLUX_RETENTION:-90d}
# the image's own entrypoint (tests run a stand-in: InfluxDB 2 cannot run on their machines)
exec "${INFLUXDB_ENTRYPOINT:-/entrypoint.sh}" "$@"
