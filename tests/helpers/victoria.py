"""A real VictoriaMetrics (Debian `victoria-metrics`) as the InfluxDB v2 write peer.

It accepts `/api/v2/write` unchanged from influxdb-client; points land as series named
`<measurement>_<field>` with the tags as labels, read back raw with
`/api/v1/export?match[]=...` (one JSON line per series). Data is readable a second or
two after a write, so `export` polls. Listens on 127.0.0.1 on a port chosen at run time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .net import free_port, stop_process, wait_for_port

VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


@dataclass
class Series:
    """One exported series: its labels, values and timestamps (ms)."""

    labels: dict[str, str]
    values: list[float]
    timestamps: list[int]


@dataclass
class Victoria:
    """One VictoriaMetrics on 127.0.0.1:`port` storing in `workdir`."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.log_file = self.workdir / "victoria.log"

    @property
    def url(self) -> str:
        """Base URL (what `influx.url` points at)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [
                VICTORIA,
                f"-storageDataPath={self.workdir / 'data'}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-retentionPeriod=100y",
                "-search.disableCache",
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
        )
        try:
            wait_for_port(self.port, timeout=20)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"victoria-metrics did not start: {self.log_file.read_text()[-2000:]}") from None

    def stop(self) -> None:
        """Stop (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        stop_process(self.process, timeout=10)
        self.process = None

    def restart(self) -> None:
        """Start again on the same port with the same data."""
        self.stop()
        self.start()

    def export_now(self, match: str) -> list[Series]:
        """Every series matching the selector `match`, as stored now."""
        query = urllib.parse.urlencode({"match[]": match})
        url = f"{self.url}/api/v1/export?{query}"
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback
            body = response.read().decode()
        series = []
        for line in body.splitlines():
            if line.strip():
                item = json.loads(line)
                series.append(Series(item["metric"], item["values"], item["timestamps"]))
        return series

    def export(
        self, match: str, until: Callable[[list[Series]], bool], timeout: float = 30.0, interval: float = 0.5
    ) -> list[Series]:
        """Poll `export_now(match)` until `until(series)` holds; the last result after `timeout`."""
        deadline = time.monotonic() + timeout
        series = self.export_now(match)
        while not until(series) and time.monotonic() < deadline:
            time.sleep(interval)
            series = self.export_now(match)
        return series


def sample_count(series: list[Series]) -> int:
    """Total number of samples over `series`."""
    return sum(len(s.values) for s in series)
