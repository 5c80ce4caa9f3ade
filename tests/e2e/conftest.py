"""The native stack of `make demo` (scripts/demo.sh under supervisord), once per session.

Started with DEMO_DETACH=1 on ports chosen at run time, so the tests exercise exactly what a
newcomer runs: every service through the release's own entrypoint and configuration. Stopped
with `scripts/demo.sh stop` (supervisorctl shutdown).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.homeassistant import HASS, HomeAssistant
from helpers.net import free_port

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv"))


@dataclass
class Stack:
    """The running demo: its directory, ports and an API client for its Home Assistant."""

    demo_dir: Path
    ports: dict[str, int]
    ha: HomeAssistant
    #: seconds `scripts/demo.sh` took to have HA onboarded and the week of history written
    startup_s: float
    #: time.monotonic() when the stack was up
    up_since: float

    @property
    def https_url(self) -> str:
        """nginx's HTTPS base URL."""
        return f"https://127.0.0.1:{self.ports['https']}"

    def secret(self, name: str) -> str:
        """A generated secret of the demo (e.g. `ha_password`, `proxy_password`)."""
        return (self.demo_dir / name).read_text().strip()

    def supervisorctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run supervisorctl against the demo's supervisord."""
        return subprocess.run(
            [str(VENV / "bin" / "supervisorctl"), "-c", str(self.demo_dir / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    """The whole appliance, up and onboarded."""
    if not HASS.exists():
        pytest.skip("Home Assistant is not installed: run make setup-ha")
    # run as root, the demo's services drop to their images' users, which must reach their own
    # directories in it: not under pytest's 0700 tmp_path
    demo_dir = Path(tempfile.mkdtemp(prefix="hems-stack-")) / "demo"
    demo_dir.parent.chmod(0o755)
    ports = {name: free_port() for name in ("mqtt", "health", "ha", "configurator", "https", "http")}
    env = {
        **os.environ,
        "DEMO_DIR": str(demo_dir),
        "DEMO_DETACH": "1",
        "VENV": str(VENV),
        **{f"DEMO_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    up_since = time.monotonic()
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        ha = HomeAssistant(demo_dir / "ha", port=ports["ha"], token=(demo_dir / "ha_token").read_text().strip())
        yield Stack(demo_dir, ports, ha, up_since - started, up_since)
    finally:
        subprocess.run(["bash", "scripts/demo.sh", "stop"], cwd=REPO, env=env, timeout=120, check=False)
        shutil.rmtree(demo_dir.parent, ignore_errors=True)
