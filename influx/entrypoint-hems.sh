#!/bin/bash
# No default passwords: on first boot generate the admin password and admin token unless
# the fleet set them, keep them in the `influx-secrets` volume, then hand over to the
# official entrypoint (which runs setup only when no influxd.bolt exists yet).
#
# Who reads them: influx-provision (the meter-bridge image, as its user `bridge`, mounting the
# volume read-only) reads the admin token, so the directory and admin.token belong to group
# INFLUX_PROVISION_GID (the `bridge` group's fixed gid in services/meter-bridge/Dockerfile; this
# image has no such group, hence the number). influxd itself (the image's `influxdb` user) reads
# neither; the admin password stays root's. Set on every boot: a volume from an older release
# keeps 0700/0600 root.
set -euo pipefail
secrets=${INFLUX_SECRETS_DIR:-/influx-secrets}
group=${INFLUX_PROVISION_GID:?the image sets INFLUX_PROVISION_GID}
mkdir -p "$secrets"
chown "root:$group" "$secrets"
chmod 0750 "$secrets"
for name in admin.password admin.token; do
    if [[ ! -s "$secrets/$name" ]]; then
        (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$secrets/$name")
    fi
done
chown root:root "$secrets/admin.password"
chmod 0600 "$secrets/admin.password"
chown "root:$group" "$secrets/admin.token"
chmod 0640 "$secrets/admin.token"
export DOCKER_INFLUXDB_INIT_PASSWORD=${DOCKER_INFLUXDB_INIT_PASSWORD:-$(cat "$secrets/admin.password")}
export DOCKER_INFLUXDB_INIT_ADMIN_TOKEN=${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN:-$(cat "$secrets/admin.token")}
export DOCKER_INFLUXDB_INIT_RETENTION=${INFLUX_RETENTION:-90d}
# the image's own entrypoint (tests run a stand-in: InfluxDB 2 cannot run on their machines)
exec "${INFLUXDB_ENTRYPOINT:-/entrypoint.sh}" "$@"
