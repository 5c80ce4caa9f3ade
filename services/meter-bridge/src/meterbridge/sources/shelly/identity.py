"""One MQTT identity per Shelly device: user = device id, topic prefix `shelly/<device id>`.

`meter-bridge shelly provision` keeps each device's password in a directory shared with the
mqtt service (one file per device, named by the device id, holding the password). The mqtt
service's entrypoint turns every file into a broker user whose ACL is `shelly/<device id>/#`
and reloads the broker when the directory changes. So a device can neither fake another's
readings nor command another's relay, and the bridge needs no per-device credentials: it reads
`shelly/#`. The same naming rules are checked on the broker side (services/mosquitto/entrypoint.sh).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError

#: Where the release mounts the identities volume in the meter-bridge container.
DEFAULT_IDENTITIES_DIR = Path("/run/hems/shelly-identities")
IDENTITIES_DIR_ENV = "SHELLY_IDENTITIES_DIR"

#: The topic level every device prefix lives under.
TOPIC_ROOT = "shelly"

#: A Shelly Gen2+ device id (`<model>-<12 hex MAC digits>`): the only names the broker accepts
#: as device users, so a device user can never be a service user (`bridge`...).
DEVICE_ID = re.compile(r"^shelly[a-z0-9]+-[0-9a-f]{12}$")

#: Passwords the broker accepts from the directory (the entrypoint checks the same).
PASSWORD = re.compile(r"^[A-Za-z0-9._~-]{16,128}$")

_ALPHABET = string.ascii_letters + string.digits


def device_prefix(device_id: str) -> str:
    """The topic prefix of a device: `shelly/<device id>`."""
    return f"{TOPIC_ROOT}/{device_id}"


@dataclass(frozen=True, slots=True)
class ShellyIdentity:
    """A device's MQTT login; `repr` never shows the password."""

    device_id: str
    password: str

    @property
    def username(self) -> str:
        """The MQTT user: the device id."""
        return self.device_id

    @property
    def prefix(self) -> str:
        """The topic prefix the broker allows this user: `shelly/<device id>`."""
        return device_prefix(self.device_id)

    def __repr__(self) -> str:
        return f"ShellyIdentity(device_id={self.device_id!r})"


class ShellyIdentityStore:
    """The identities directory: `<dir>/<device id>` holds that device's password."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def from_environment(cls) -> ShellyIdentityStore:
        """The store at `$SHELLY_IDENTITIES_DIR`, or where the release mounts it."""
        return cls(Path(os.environ.get(IDENTITIES_DIR_ENV) or DEFAULT_IDENTITIES_DIR))

    def get(self, device_id: str) -> ShellyIdentity | None:
        """The stored identity, or None when there is none (or it is unusable and must be made anew)."""
        path = self._path(device_id)
        try:
            password = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError([f"{path}: cannot read the Shelly identity: {err}"]) from err
        return ShellyIdentity(device_id, password) if PASSWORD.match(password) else None

    def get_or_create(self, device_id: str) -> tuple[ShellyIdentity, bool]:
        """The device's identity and whether it was made now (32 random letters and digits).

        Idempotent: a device keeps its identity across runs. Raises `ConfigError` naming the
        directory when it cannot be written (not mounted, or not writable by this user).
        """
        existing = self.get(device_id)
        if existing is not None:
            return existing, False
        identity = ShellyIdentity(device_id, "".join(secrets.choice(_ALPHABET) for _ in range(32)))
        path = self._path(device_id)
        # A dot-name the broker ignores, renamed into place: it never sees half a password.
        tmp = path.with_name(f".{device_id}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as file:
                file.write(identity.password)
                file.flush()
                os.fsync(file.fileno())
            tmp.replace(path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ConfigError(
                [f"{self.directory}: cannot store the MQTT identity of {device_id}: {err.strerror or err}"]
            ) from err
        return identity, True

    def device_ids(self) -> list[str]:
        """The devices that have an identity, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_file() and DEVICE_ID.match(p.name))

    def _path(self, device_id: str) -> Path:
        if not DEVICE_ID.match(device_id):
            raise ConfigError([f"{device_id!r} is not a Shelly Gen2+ device id (`shelly<model>-<12 hex digits>`)"])
        return self.directory / device_id
