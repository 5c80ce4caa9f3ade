#!/usr/bin/env bash
# The container tests' tools and base image (called by setup.sh; idempotent).
#
# podman from Debian, run with runc (scripts/podman/containers.conf says why), and a stand-in for
# the python:slim base that the release's Python images (meter-bridge, hass-configurator) start
# FROM: no container registry is reachable here, so the base is made with debootstrap from
# Debian's archive and tagged with the exact name the Dockerfiles use. The Dockerfiles build
# unchanged on it. How it differs from the real image (README, "Container tests"): Debian's
# Python 3.11.2 in /usr/bin with its dist-packages, not python.org's 3.11.11 in /usr/local;
# Debian's pip 23.0.1; the machine's own CA certificates added.
#
# The root file system is cached as a tarball under .cache/podman-base (keyed by this script's
# content) and imported into podman's store when the store lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINERS_CONF=$PWD/scripts/podman/containers.conf
sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

missing=()
for pkg in podman buildah runc debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]} (the container tests)"
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The one base the release's Python images name (tests/release/test_release_images.py builds each).
mapfile -t dockerfiles < <(find . -name Dockerfile -not -path './.*' -not -path './node_modules/*')
bases=$(sed -n 's/^FROM \(python:[^ ]*\).*/\1/p' "${dockerfiles[@]}" | sort -u)
if [[ $(wc -l <<<"$bases") -ne 1 ]]; then
    echo "setup: the Python images name different bases: $bases" >&2
    exit 1
fi
tag=docker.io/library/$bases
suite=${bases##*-}  # python:3.11.11-slim-bookworm -> bookworm

key=$(cat "$0" scripts/podman/containers.conf | sha256sum | cut -c1-16)
cache=.cache/podman-base
tarball=$cache/$suite-$key.tar
label="hems.stand-in=$suite-$key"

if [[ ! -s $tarball ]]; then
    echo "setup: making the stand-in for $tag with debootstrap (the first time takes about a minute)"
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/root.XXXXXX")
    trap '"${sudo_cmd[@]}" rm -rf "$root"' EXIT
    "${sudo_cmd[@]}" debootstrap --variant=minbase \
        --include=python3,python3-pip,python3-venv,ca-certificates,netbase,tzdata \
        "$suite" "$root" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    # what python:slim has: pip may install into the system Python, python/pip in /usr/local/bin
    "${sudo_cmd[@]}" rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
    for name in python3 python pip3 pip; do
        target=/usr/bin/$name
        [[ $name == python ]] && target=/usr/bin/python3
        [[ $name == pip ]] && target=/usr/bin/pip3
        "${sudo_cmd[@]}" ln -sf "$target" "$root/usr/local/bin/$name"
    done
    # HTTPS from inside a container passes the machine's proxy: trust what the machine trusts
    shopt -s nullglob
    host_cas=(/usr/local/share/ca-certificates/*.crt)
    if ((${#host_cas[@]})); then
        "${sudo_cmd[@]}" cp "${host_cas[@]}" "$root/usr/local/share/ca-certificates/"
        "${sudo_cmd[@]}" chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
    "${sudo_cmd[@]}" rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*
    "${sudo_cmd[@]}" tar -C "$root" -cf "$tarball.new" .
    mv "$tarball.new" "$tarball"
    "${sudo_cmd[@]}" rm -rf "$root"
    # earlier stand-ins (this script changed since): ~200 MB each
    find "$cache" -maxdepth 1 -name '*.tar' ! -name "${tarball##*/}" -delete
    trap - EXIT
fi

if [[ $("${sudo_cmd[@]}" podman image inspect --format '{{index .Labels "hems.stand-in"}}' "$tag" 2>/dev/null) != "${label#*=}" ]]; then
    echo "setup: importing the stand-in base as $tag"
    "${sudo_cmd[@]}" podman import --quiet \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $label" \
        --change 'CMD ["python3"]' \
        "$tarball" "$tag" >/dev/null
fi
