#!/usr/bin/env bash
# `make lock`: regenerate services/meter-bridge/requirements.lock, the exact versions and hashes of
# the bridge's runtime dependencies that the image and `make setup` install
# (`pip install --require-hashes --only-binary=:all:`), from the ranges in its pyproject.toml.
#
# uv resolves once for every platform (--universal) from Python 3.11 on, wheels only, from PyPI
# alone (uv reads no pip configuration), and writes the hashes of every file PyPI has for each
# pinned version. Then pip itself fetches the wheels a Raspberry Pi 4 (aarch64) and a build
# machine (x86_64) would install, CPython 3.11, hashes required: a version without such a wheel
# fails here, not on a device. tests/release/test_release_lock.py checks the lock against
# pyproject.toml and the fetched wheels (scripts/setup.sh fetches them too).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
lock=services/meter-bridge/requirements.lock
"$VENV/bin/uv" pip compile --quiet --native-tls \
    --universal --python-version 3.11 --only-binary :all: --generate-hashes \
    --custom-compile-command "make lock" \
    --output-file "$lock" services/meter-bridge/pyproject.toml
bash scripts/lock-wheels.sh "$lock"
echo "lock: $lock ($(grep -c '==' "$lock") pins), wheels for aarch64 and x86_64 found"
