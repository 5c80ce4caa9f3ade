#!/bin/bash
# A STAND-IN for the influxdb:2.7 image's /entrypoint.sh (influxdata/influxdata-docker,
# influxdb/2.7/entrypoint.sh): InfluxDB 2 cannot run on these machines. It keeps the part that
# decides who owns what in the volumes: on first boot (no bolt file) `influx setup` takes
# DOCKER_INFLUXDB_INIT_ADMIN_TOKEN (recorded here in setup-admin-token beside the bolt file, for the
# test's management API double) and the scripts in the init directory run, all as root; then it
# steps down to the image's influxdb user (`gosu influxdb`: 1000:1000, its Dockerfile's
# groupadd/useradd) and execs the command, which stands in for influxd.
set -eo pipefail
bolt=${INFLUXD_BOLT_PATH:?the test sets the bolt file}
initdb=${STANDIN_INITDB_DIR:?the test sets the init script directory}
if [ ! -f "$bolt" ]; then
    for name in USERNAME PASSWORD ORG BUCKET; do
        var=DOCKER_INFLUXDB_INIT_$name
        [ -n "${!var}" ] || { echo "missing $var" >&2; exit 1; }
    done
    mkdir -p "$(dirname "$bolt")"
    (umask 077 && printf '%s' "${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN:?}" >"$(dirname "$bolt")/setup-admin-token")
    run-parts --regex '.*sh$' --report --exit-on-error "$initdb"
    touch "$bolt"
fi
exec setpriv --reuid=1000 --regid=1000 --clear-groups "$@"
