"""`meter-bridge run` as a real child process (for chaos tests: SIGKILL, restarts, log greps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .net import free_port, stop_process


@dataclass
class BridgeProcess:
    """One `meter-bridge run --config` child; `config` is YAML text with `{health_port}` filled in."""

    workdir: Path
    config: str
    env: dict[str, str] = field(default_factory=dict)
    health_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.health_port = self.health_port or free_port()
        self.config_file = self.workdir / "config.yaml"
        self.log_file = self.workdir / "bridge.log"

    def start(self, config: str | None = None) -> None:
        """Write the config (this one or the last), start, and wait until /healthz answers."""
        if config is not None:
            self.config = config
        self.config_file.write_text(self.config.replace("{health_port}", str(self.health_port)))
        self.runs += 1
        log = self.log_file.open("ab")
        env = {**os.environ, **self.env}
        cmd = [sys.executable, "-m", "meterbridge.cli", "run", "--config", str(self.config_file)]
        self.process = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while self.health() is None:
            if self.process.poll() is not None:
                raise RuntimeError(f"meter-bridge exited: {self.log_file.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"meter-bridge did not answer /healthz: {self.log_file.read_text()[-3000:]}")
            time.sleep(0.1)

    def health(self) -> dict[str, Any] | None:
        """The /healthz document, or None when the bridge is not answering."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as err:  # 503 still carries the report
            return dict(json.load(err))
        except (OSError, ValueError):
            return None

    def metrics(self) -> str:
        """The /metrics text."""
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())

    def kill9(self) -> None:
        """SIGKILL and reap."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """SIGTERM (clean shutdown), SIGKILL after a timeout."""
        if self.process is None:
            return
        stop_process(self.process, timeout=15)
        self.process = None
