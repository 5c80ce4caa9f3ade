#!/bin/bash
# Runs once, right after the image's first-boot setup. If the fleet supplied its own
# DOCKER_INFLUXDB_INIT_ADMIN_TOKEN, record it where `influx-provision` reads it, so the
# provisioning step always finds the admin token in the `influx-secrets` volume.
set -euo pipefail
secrets=${INFLUX_SECRETS_DIR:-/influx-secrets}
(umask 077 && printf '%s' "${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN}" >"$secrets/admin.token")
echo "hems: first-boot setup done for org ${DOCKER_INFLUXDB_INIT_ORG}; provisioning runs in influx-provision"
