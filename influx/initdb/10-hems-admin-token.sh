#!/bin/bash
# Runs once, right after the image's first-boot setup (as root: the image's entrypoint steps down
# to `influxdb` only afterwards). If the fleet supplied its own DOCKER_INFLUXDB_INIT_ADMIN_TOKEN,
# record it where `influx-provision` reads it, so the provisioning step always finds the admin
# token in the `influx-secrets` volume: readable by influx-provision's group only, as
# entrypoint-hems.sh leaves it.
set -euo pipefail
secrets=${INFLUX_SECRETS_DIR:-/influx-secrets}
(umask 077 && printf '%s' "${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN}" >"$secrets/admin.token.new")
chown "root:${INFLUX_PROVISION_GID:?the image sets INFLUX_PROVISION_GID}" "$secrets/admin.token.new"
chmod 0640 "$secrets/admin.token.new"
mv "$secrets/admin.token.new" "$secrets/admin.token"
echo "hems: first-boot setup done for org ${DOCKER_INFLUXDB_INIT_ORG}; provisioning runs in influx-provision"
