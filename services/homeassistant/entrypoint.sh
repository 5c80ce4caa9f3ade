#!/bin/sh
# Seed /config from the files this release owns and HA's managed settings (hems_seed.py), then
# start Home Assistant's own init (s6-overlay). A seeding failure is logged but never keeps Home
# Assistant from starting.
#
# First boot in any order: seeding waits (bounded, HEMS_SEED_WAIT_S) for the broker's password.
# A watcher then stays in the background: when the broker's password or influx-provision's token
# differs from what was seeded (it arrived late, or was rotated), it stops the container (SIGTERM to
# PID 1, s6's graceful shutdown); `restart: always` brings it back through this seeding.
set -eu
python3 /usr/local/bin/hems_seed.py --wait "${HEMS_SEED_WAIT_S:-120}" ||
    echo "homeassistant-entrypoint: seeding /config failed (see above)" >&2
# First boot only (no database yet): the recorder's database with small pages (fewer bytes per
# commit on the SD card); an existing database is never touched. Never keeps HA from starting.
python3 /usr/local/bin/hems_recorder_db.py ||
    echo "homeassistant-entrypoint: creating the recorder database failed (HA creates its own)" >&2
python3 /usr/local/bin/hems_seed.py --watch 1 --poll "${HEMS_SECRETS_POLL_S:-30}" &
exec /init "$@"
