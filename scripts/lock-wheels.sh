#!/usr/bin/env bash
# Fetch, with pip and hashes required, the wheels that the lock (argument 1) installs on each
# platform the release runs or builds on: CPython 3.11 on manylinux aarch64 (Raspberry Pi 4,
# balenaOS, python:slim's glibc 2.36) and x86_64. Fails when a pin has no such wheel.
# Into .cache/lock-wheels/<platform>, once per lock content (stamped);
# tests/release/test_release_lock.py reads them.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
lock=${1:-services/meter-bridge/requirements.lock}
stamp_value=$(sha256sum "$lock" | cut -c1-16)
for machine in aarch64 x86_64; do
    dest=.cache/lock-wheels/$machine
    [[ $(cat "$dest/.stamp" 2>/dev/null) == "$stamp_value" ]] && continue
    rm -rf "$dest"
    mkdir -p "$dest"
    # The machine's own wheel folders and indexes (pip.conf's find-links, extra-index-url) are not
    # what a device sees: PyPI alone.
    platforms=(--platform "manylinux2014_$machine")
    for glibc_minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${glibc_minor}_$machine"); done
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "$VENV/bin/pip" download --quiet --no-deps --dest "$dest" \
        --require-hashes --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
        "${platforms[@]}" -r "$lock"
    echo "$stamp_value" >"$dest/.stamp"
done
