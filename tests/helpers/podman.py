"""The release's images built and run with podman, as docker-compose.yml runs them.

`make setup-containers` installs podman and imports a stand-in for the Python images' base
(scripts/setup-containers.sh); podman reads its settings from scripts/podman/containers.conf
(runc, cgroupfs, events to a file: KNOWLEDGE.md says why). Images are built from the release's
Dockerfiles as they are, with `--format docker` (the OCI format drops HEALTHCHECK) and never pulled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .release import REPO

CONTAINERS_CONF = REPO / "scripts" / "podman" / "containers.conf"
#: Label the stand-in base carries (scripts/setup-containers.sh); images built on it inherit it.
STAND_IN_LABEL = "hems.stand-in"


def podman_env() -> dict[str, str]:
    """The environment podman runs with here: the repository's containers.conf."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS`; with `check`, a failure raises with podman's output."""
    result = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def why_podman_cannot_run() -> str | None:
    """None where podman can run containers here; else the reason (only ever a skip outside CI)."""
    if shutil.which("podman") is None:
        return "podman is not installed (make setup-containers installs it on Debian/Ubuntu)"
    if os.geteuid() != 0:
        return "the container tests run podman as root (privileged containers, root-owned volumes)"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-300:]}"
    return None


def base_image(dockerfile: Path) -> str:
    """The image the last stage of `dockerfile` starts FROM (what the stand-in must be tagged)."""
    froms = re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
    return str(froms[-1])


def build(dockerfile: Path, context: Path, tag: str) -> str:
    """Build `dockerfile` (the release's file, unchanged) in `context` as `tag`; the image id."""
    podman("build", "--pull=never", "--format", "docker", "--quiet", "--tag", tag,
           "--file", str(dockerfile), str(context), timeout=900)  # fmt: skip
    return str(podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip())


def image_config(tag: str) -> dict[str, object]:
    """`podman image inspect` of `tag` (Healthcheck, Labels, Config.Env...)."""
    data = json.loads(podman("image", "inspect", tag).stdout)
    assert isinstance(data, list)
    config = data[0]
    assert isinstance(config, dict)
    return config


@dataclass
class Container:
    """A container run as docker-compose.yml runs a service: `network_mode: host` and `privileged`
    when the service says so, its named volumes (`NAME:/path[:ro]` as `host dir:/path[:ro]`), its
    `environment`, its `command`; removed by `remove()`."""

    image: str
    name: str
    volumes: dict[Path, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    privileged: bool = False
    host_network: bool = True
    started: bool = False

    def run_args(self) -> list[str]:
        """`podman run` arguments, without the detach/rm choice."""
        args = ["--name", self.name]
        if self.host_network:
            args += ["--network", "host"]
        if self.privileged:
            args.append("--privileged")
        for source, target in self.volumes.items():
            args += ["--volume", f"{source}:{target}"]
        for key, value in self.environment.items():
            args += ["--env", f"{key}={value}"]
        return [*args, self.image, *self.command]

    def start(self) -> None:
        """`podman run --detach`."""
        podman("run", "--detach", *self.run_args())
        self.started = True

    def run_once(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run to completion (`podman run --rm`, attached) with a hang bound; the result, not checked."""
        self.started = True
        return podman("run", "--rm", *self.run_args(), timeout=timeout, check=False)

    def exec(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`podman exec` as an operator runs it (root in the container, the container's environment)."""
        return podman("exec", self.name, *args, timeout=timeout, check=False)

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """`podman healthcheck run`: the image's own HEALTHCHECK, once (exit 0: healthy)."""
        return podman("healthcheck", "run", self.name, timeout=60, check=False)

    def wait_healthy(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run the healthcheck until it passes or `timeout` (a hang bound) is over; the last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.healthcheck()
            if result.returncode == 0 or time.monotonic() > deadline or not self.running():
                return result
            time.sleep(1)

    def running(self) -> bool:
        """Whether the container's main process still runs."""
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        """What the container wrote to stdout and stderr."""
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        """Stop and remove the container (nothing left behind in podman's store)."""
        if self.started:
            podman("rm", "--force", "--time", "5", self.name, check=False)
            self.started = False
