# One-command workflows. `make demo` and `make test` each run `make setup` first, so
# each works on a fresh Debian/Ubuntu machine.

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
SRC    := services/meter-bridge/src
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup setup-containers setup-ha setup-ha-previous demo demo-stop test unit lint typecheck bench readme lock reliability fidelity clean

setup:
	@bash scripts/setup.sh

# What only the tests need: the wheels the lock installs on a Raspberry Pi 4 and on x86_64
# (tests/release/test_release_lock.py), podman and the stand-in base image of the container tests
# (tests/release/test_release_images.py). `make demo` does without.
setup-containers: setup
	@bash scripts/lock-wheels.sh services/meter-bridge/requirements.lock
	@bash scripts/setup-containers.sh

# The Home Assistant services/homeassistant/Dockerfile pins (.cache/ha/bin/hass) for `make demo` and the
# tests that run a real HA; 2024.3.3 (.cache/ha-2024.3.3) for the upgrade test only.
setup-ha:
	@bash scripts/setup-ha.sh

setup-ha-previous:
	@bash scripts/setup-ha-previous.sh

demo: setup setup-ha
	@bash scripts/demo.sh

demo-stop:
	@bash scripts/demo.sh stop

lint: setup
	$(VENV)/bin/ruff check services/meter-bridge/src services/homeassistant tests scripts
	$(VENV)/bin/ruff format --check services/meter-bridge/src services/homeassistant tests scripts

typecheck: setup
	$(VENV)/bin/mypy

test: setup setup-containers setup-ha setup-ha-previous
	$(MAKE) --no-print-directory lint typecheck
	$(VENV)/bin/pytest

unit: setup
	$(VENV)/bin/pytest tests/unit

readme: setup
	$(PY) scripts/readme_config.py

# services/meter-bridge/requirements.lock from the ranges in its pyproject.toml (scripts/lock.sh)
lock: setup
	@bash scripts/lock.sh

# Long chaos/fuzz/security runs (bounded to 30 min), then docs/reliability.md from their figures.
reliability: setup setup-ha setup-ha-previous
	rm -f .cache/reliability/figures-full.json
	HEMS_RELIABILITY=full timeout 1800 $(VENV)/bin/pytest tests/reliability --timeout=1200 -q || true
	$(PY) scripts/reliability_report.py --mode full

# A month in a home through the real bridge, broker and database (a few minutes), then a 25-minute
# real-time window through the pinned Home Assistant; figures in .cache/fidelity/ (docs/fidelity.md).
fidelity: setup setup-ha
	HEMS_FIDELITY=full $(VENV)/bin/pytest tests/fidelity --timeout=3600 -q -s

bench: setup
	$(PY) tests/bench/run.py

clean:
	rm -rf $(VENV) .cache .demo
