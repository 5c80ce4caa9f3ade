#!/bin/sh
# Healthy when nginx answers over TLS on its own health location.
set -eu
exec curl -fsk --max-time 5 -o /dev/null "https://127.0.0.1:${NGINX_HTTPS_PORT:-443}/nginx-health"
