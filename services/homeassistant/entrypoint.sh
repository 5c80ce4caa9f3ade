#!/bin/sh
# Seed /config from the files this release owns (hems_seed.py), then start Home Assistant's own
# init (s6-overlay). A seeding failure is logged but never keeps Home Assistant from starting.
set -eu
python3 /usr/local/bin/hems_seed.py || echo "homeassistant-entrypoint: seeding /config failed (see above)" >&2
exec /init "$@"
