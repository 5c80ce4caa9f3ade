"""A real Mosquitto broker with authentication, run natively for a test.

Anonymous access is off; users and passwords are made per broker; an optional ACL
file restricts topics. Mosquitto (Debian's package) must be installed: `make setup`
does it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .net import free_port, stop_process, wait_for_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


@dataclass
class Mosquitto:
    """One broker on 127.0.0.1:`port`. `users` maps user -> password (generated when None)."""

    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    acl: str | None = None
    port: int = 0
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.users:
            self.users = {"bridge": secrets.token_urlsafe(12), "observer": secrets.token_urlsafe(12)}
        self.port = self.port or free_port()
        passwd = self.workdir / "passwd"
        passwd.write_text("")
        for user, password in self.users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True, capture_output=True)
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"listener {self.port} {self.host}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "user root",  # as root Mosquitto would drop to `mosquitto`, which cannot read our files
        ]
        if self.acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        self.config_file = self.workdir / "mosquitto.conf"
        self.config_file.write_text("\n".join(lines) + "\n")
        self.log_file = self.workdir / "mosquitto.log"

    def password(self, user: str) -> str:
        """The password of `user`."""
        return self.users[user]

    def bridge_mqtt(self, base_topic: str, user: str = "bridge") -> dict[str, object]:
        """The bridge config's `mqtt` section for this broker, with a client id unique to `base_topic`."""
        return {
            "host": self.host,
            "port": self.port,
            "username": user,
            "password": self.password(user),
            "base_topic": base_topic,
            "client_id": f"bridge-{base_topic}",
        }

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        log = self.log_file.open("ab")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config_file)], stdout=log, stderr=log)
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_file.read_text()}") from None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None
        # make sure the port is really released before a restart binds it again
        time.sleep(0.05)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()
