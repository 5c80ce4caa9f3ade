#!/bin/sh
# nginx entrypoint: TLS certificate (the operator's, or a self-signed one made on first boot for
# the device's name), the htpasswd for /configurator/, /influxdb/ and /zigbee2mqtt/, the rendered
# config (nginx.conf and the Home Assistant proxy block it includes twice); then
# exec nginx. `entrypoint.sh --render-only` stops before starting nginx (used by the tests).
set -eu

template=${NGINX_TEMPLATE:-/etc/hems/nginx.conf.template}
conf_file=${NGINX_CONF_FILE:-/etc/nginx/nginx.conf}
data_dir=${NGINX_DATA_DIR:-/data}
run_dir=${NGINX_RUN_DIR:-/var/cache/nginx}
http_port=${NGINX_HTTP_PORT:-80}
https_port=${NGINX_HTTPS_PORT:-443}
admin_user=${PROXY_ADMIN_USER:-admin}
tls_dir="$data_dir/tls"

log() { echo "nginx-entrypoint: $*" >&2; }
fail() {
    log "$*"
    exit 2
}

umask 077
mkdir -p "$data_dir" "$tls_dir" "$run_dir"

# --- TLS certificate -----------------------------------------------------------------------
hostname=${TLS_HOSTNAME:-$(hostname)}
case "$hostname" in
    *[!A-Za-z0-9.-]* | "") fail "TLS_HOSTNAME '$hostname' is not a DNS name" ;;
esac
names="DNS:$hostname,DNS:localhost,IP:127.0.0.1"
case "$hostname" in
    *.*) ;;
    *) names="DNS:$hostname,DNS:$hostname.local,DNS:localhost,IP:127.0.0.1" ;; # mDNS name on the LAN
esac

if [ -n "${TLS_CERT:-}" ] || [ -n "${TLS_KEY:-}" ]; then
    [ -n "${TLS_CERT:-}" ] && [ -n "${TLS_KEY:-}" ] || fail "set both TLS_CERT and TLS_KEY (PEM), or neither"
    printf '%s\n' "$TLS_CERT" >"$tls_dir/cert.pem.new"
    printf '%s\n' "$TLS_KEY" >"$tls_dir/key.pem.new"
    cert_pub=$(openssl x509 -in "$tls_dir/cert.pem.new" -noout -pubkey 2>/dev/null) || fail "TLS_CERT is not a PEM certificate"
    key_pub=$(openssl pkey -in "$tls_dir/key.pem.new" -pubout 2>/dev/null) || fail "TLS_KEY is not a PEM private key"
    [ "$cert_pub" = "$key_pub" ] || fail "TLS_KEY does not belong to TLS_CERT"
    mv "$tls_dir/cert.pem.new" "$tls_dir/cert.pem"
    mv "$tls_dir/key.pem.new" "$tls_dir/key.pem"
    echo operator >"$tls_dir/source"
    log "using the operator's certificate from TLS_CERT/TLS_KEY"
else
    # A self-signed certificate: made on first boot, again when the name changes, when it
    # expires within 30 days, or after the operator's certificate was removed.
    renew=no
    [ -s "$tls_dir/cert.pem" ] && [ -s "$tls_dir/key.pem" ] || renew=yes
    [ "$(cat "$tls_dir/source" 2>/dev/null || true)" = "self-signed $names" ] || renew=yes
    if [ "$renew" = no ] && ! openssl x509 -in "$tls_dir/cert.pem" -noout -checkend 2592000 >/dev/null; then
        renew=yes
    fi
    if [ "$renew" = yes ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
            -subj "/CN=$hostname" -addext "subjectAltName=$names" \
            -keyout "$tls_dir/key.pem.new" -out "$tls_dir/cert.pem.new" 2>/dev/null
        mv "$tls_dir/key.pem.new" "$tls_dir/key.pem"
        mv "$tls_dir/cert.pem.new" "$tls_dir/cert.pem"
        echo "self-signed $names" >"$tls_dir/source"
        log "made a self-signed certificate for $names"
    fi
fi

# --- basic auth for /configurator/ and /influxdb/ ------------------------------------------
case "$admin_user" in
    *:* | "") fail "PROXY_ADMIN_USER must be non-empty and without ':'" ;;
esac
if [ -n "${PROXY_ADMIN_PASSWORD:-}" ]; then
    [ "${#PROXY_ADMIN_PASSWORD}" -ge 12 ] || fail "PROXY_ADMIN_PASSWORD is shorter than 12 characters: refusing it"
    admin_password=$PROXY_ADMIN_PASSWORD
else
    if [ ! -s "$data_dir/admin-password" ]; then
        LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24 >"$data_dir/admin-password"
        log "no PROXY_ADMIN_PASSWORD set: generated one for '$admin_user'; read it in the nginx" \
            "container with: cat $data_dir/admin-password"
    fi
    admin_password=$(cat "$data_dir/admin-password")
fi
# the password goes to openssl on stdin, never on a command line
hash=$(printf '%s\n' "$admin_password" | openssl passwd -6 -stdin)
printf '%s:%s\n' "$admin_user" "$hash" >"$data_dir/htpasswd.new"
mv "$data_dir/htpasswd.new" "$data_dir/htpasswd"
unset admin_password hash

# --- nginx.conf ----------------------------------------------------------------------------
https_port_suffix=":$https_port"
[ "$https_port" != 443 ] || https_port_suffix=""
conf_dir=$(dirname "$conf_file")
# render TEMPLATE FILE: the placeholders filled in, written atomically, readable by the workers.
render() {
    sed -e "s|@@RUN_USER@@|${NGINX_RUN_USER:-nginx}|g" \
        -e "s|@@RUN_DIR@@|$run_dir|g" \
        -e "s|@@DATA_DIR@@|$data_dir|g" \
        -e "s|@@CONF_DIR@@|$conf_dir|g" \
        -e "s|@@MIME_TYPES@@|${NGINX_MIME_TYPES:-/etc/nginx/mime.types}|g" \
        -e "s|@@LISTEN_ADDRESS@@|${NGINX_LISTEN_ADDRESS:-0.0.0.0}|g" \
        -e "s|@@HTTP_PORT@@|$http_port|g" \
        -e "s|@@HTTPS_PORT@@|$https_port|g" \
        -e "s|@@HTTPS_PORT_SUFFIX@@|$https_port_suffix|g" \
        -e "s|@@UPSTREAM_HOMEASSISTANT@@|${NGINX_UPSTREAM_HOMEASSISTANT:-127.0.0.1:8123}|g" \
        -e "s|@@UPSTREAM_CONFIGURATOR@@|${NGINX_UPSTREAM_CONFIGURATOR:-127.0.0.1:3218}|g" \
        -e "s|@@UPSTREAM_INFLUXDB@@|${NGINX_UPSTREAM_INFLUXDB:-127.0.0.1:8086}|g" \
        -e "s|@@UPSTREAM_ZIGBEE2MQTT@@|${NGINX_UPSTREAM_ZIGBEE2MQTT:-127.0.0.1:8080}|g" \
        "$1" >"$2.new"
    mv "$2.new" "$2"
    chmod 0644 "$2"
}
render "$(dirname "$template")/homeassistant-proxy.conf.template" "$conf_dir/hems-homeassistant.conf"
render "$template" "$conf_file"
# workers (not root) read the htpasswd; the key is read by the master before dropping privileges
if [ "$(id -u)" = 0 ] && [ "${NGINX_RUN_USER:-nginx}" != root ]; then
    chown "${NGINX_RUN_USER:-nginx}" "$data_dir/htpasswd"
fi

if [ "${1:-}" = --render-only ]; then
    exit 0
fi
log "serving https on port $https_port for $hostname"
exec "${NGINX_BIN:-nginx}" -c "$conf_file" -g 'daemon off;'
