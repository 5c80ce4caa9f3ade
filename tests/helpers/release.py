"""Service entrypoints of the release run natively: paths redirected by the variables each
image sets with ENV, servers on 127.0.0.1 with ports chosen at run time."""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from meterbridge.sources.shelly.identity import ShellyIdentityStore

from .image_users import image_users
from .net import free_port, stop_process, wait_for_port

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO_DIR = REPO / "services" / "mosquitto"
CONSUMERS = ("bridge", "homeassistant", "zigbee2mqtt")
MOSQUITTO_USER = image_users()["mqtt"].test_name


class Volumes:
    """Named volumes as the engine makes them: each a fresh directory, root:root 0755 (what a
    container sees at its mount point on first boot), under a directory every image user can
    traverse (pytest's tmp_path is 0700 root). `volumes("influx-secrets")` makes or returns one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.chmod(0o755)

    def __call__(self, name: str) -> Path:
        path = self.root / name
        if not path.exists():
            path.mkdir()
            os.chown(path, 0, 0)
            path.chmod(0o755)
        return path

    @classmethod
    def temporary(cls) -> Iterator[Volumes]:
        """A fresh set in /tmp, removed afterwards."""
        root = Path(tempfile.mkdtemp(prefix="hems-volumes-"))
        try:
            yield cls(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def traversable(root: Path, name: str) -> Path:
    """`root/name` as a link to a fresh root-owned 0755 directory that an image's user can reach
    (pytest's tmp_path has 0700 parents); the directory itself, for the service's variables. Made
    once per `root`, removed at exit."""
    link = root / name
    if not link.is_symlink():
        root.mkdir(parents=True, exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix=f"hems-{name}-"))
        target.chmod(0o755)
        atexit.register(shutil.rmtree, target, True)
        link.symlink_to(target, target_is_directory=True)
    return link.resolve()


@dataclass(frozen=True, slots=True)
class Mount:
    """One entry of a service's `volumes:` in docker-compose.yml, with the volume's directory here."""

    volume: str
    target: str
    read_only: bool
    path: Path


def mounts(compose: Mapping[str, Any], service: str, volumes: Volumes) -> list[Mount]:
    """The named volumes `service` mounts (compose's short syntax `name:/target[:ro]`)."""
    found = []
    for entry in compose["services"][service].get("volumes") or []:
        volume, target, *options = str(entry).split(":")
        found.append(Mount(volume, target, "ro" in options, volumes(volume)))
    return found


def read_only(argv: Sequence[str], paths: Sequence[Path]) -> list[str]:
    """`argv` in a mount namespace of its own where each of `paths` is a read-only bind mount of
    itself: compose's `:ro` as the container sees it (root gets EROFS too, which a chmod would not
    give), for that process tree only (`unshare -m`, as root)."""
    if not paths:
        return list(argv)
    script = (
        'while [ "$1" != -- ]; do mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" || exit 1; '
        'shift; done; shift; exec "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            *map(str, paths), "--", *argv]  # fmt: skip


def image_environment(dockerfile: Path) -> dict[str, str]:
    """The ENV of the final stage of `dockerfile`, as written (container paths)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :] if "\nFROM " in text else text
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", final, flags=re.MULTILINE):
        env.update(re.findall(r"([A-Z][A-Z0-9_]*)=(\S+)", line))
    return env


def relocate(env: Mapping[str, str], service_mounts: Sequence[Mount], image_root: Path) -> dict[str, str]:
    """`env` with every absolute container path moved under `image_root`, the container's file
    tree here: each mount target in it is a link to that volume's directory, so a path inside a
    mount lands in the volume and the parents of nested mount points exist as in the container."""
    for mount in service_mounts:
        point = image_root / mount.target.lstrip("/")
        if not point.is_symlink():
            point.parent.mkdir(parents=True, exist_ok=True)
            point.symlink_to(mount.path, target_is_directory=True)
    return {
        name: str(image_root / value.lstrip("/")) if value.startswith("/") else value for name, value in env.items()
    }


@dataclass
class ReleaseBroker:
    """The mqtt service's entrypoint run natively: it renders users, ACL and config into
    `root`, then execs a real Mosquitto on 127.0.0.1:`port`."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    #: The shell that runs the entrypoint (the image's is busybox `sh`).
    interpreter: tuple[str, ...] = ("sh",)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        # the broker drops to the image's user (1883): its volumes must be in a directory that user
        # can traverse, which pytest's tmp_path (0700 parents) is not; the log stays in `root`
        self.root.mkdir(parents=True, exist_ok=True)
        self.volumes = Path(tempfile.mkdtemp(prefix="hems-mqtt-"))
        self.volumes.chmod(0o755)
        atexit.register(shutil.rmtree, self.volumes, True)
        for consumer in CONSUMERS:
            (self.share / consumer).mkdir(parents=True, exist_ok=True)
        self.identities.mkdir(parents=True, exist_ok=True)

    @property
    def identities(self) -> Path:
        """The Shelly identities volume (the bridge writes it, the broker reads it)."""
        return self.volumes / "shelly-identities"

    def add_shelly(self, device_id: str, timeout: float = 60.0) -> str:
        """Give `device_id` an identity as provisioning does and wait until the broker takes it; its password."""
        identity, _ = ShellyIdentityStore(self.identities).get_or_create(device_id)
        deadline = time.monotonic() + timeout
        while not self.accepts(device_id, identity.password):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the broker did not take {device_id} in: {self.log_text()[-2000:]}")
            time.sleep(0.1)
        return identity.password

    def accepts(self, user: str, password: str) -> bool:
        """Whether the broker lets `user` log in with `password` now."""
        result = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-u", user, "-P", password, "-t", "probe/x",
             "-n", "-i", f"{user}-login-probe"],
            capture_output=True, timeout=10,
        )  # fmt: skip
        return result.returncode == 0

    def log_text(self) -> str:
        """What the entrypoint, its watcher and the broker logged."""
        return (self.root / "entrypoint.log").read_text(errors="replace")

    @property
    def config(self) -> Path:
        """Where the entrypoint renders the broker's config, password file and ACL."""
        return self.volumes / "config"

    @property
    def share(self) -> Path:
        """Where each consumer's credentials volume is mounted (one directory per consumer)."""
        return self.volumes / "share"

    @property
    def data(self) -> Path:
        """The broker's data volume (persistence and generated secrets)."""
        return self.volumes / "data"

    def environment(self) -> dict[str, str]:
        """The variables the image sets, pointed at `root`, plus the test's own."""
        return {
            "PATH": os.environ["PATH"],
            "MOSQUITTO_CONFIG_DIR": str(self.config),
            "MOSQUITTO_DATA_DIR": str(self.data),
            "MQTT_SHARE_DIR": str(self.share),
            "MOSQUITTO_LISTEN_ADDRESS": "127.0.0.1",
            "MOSQUITTO_PORT": str(self.port),
            # the image's user `mosquitto` (1883:1883), named so on test machines, where Debian's
            # own mosquitto user has other ids (scripts/image-users.tsv)
            "MOSQUITTO_RUN_USER": MOSQUITTO_USER,
            "MOSQUITTO_BIN": shutil.which("mosquitto") or "/usr/sbin/mosquitto",
            "MQTT_SHELLY_IDENTITIES_DIR": str(self.identities),
            # the release polls every 5 s; tests do not wait that long
            "MQTT_SHELLY_IDENTITIES_POLL_S": "0.2",
            **self.env,
        }

    def password(self, user: str) -> str:
        """The password the entrypoint generated (or took from a variable) for `user`, or a Shelly's."""
        if self._override(user):
            return self._override(user)
        if (self.identities / user).exists():
            return (self.identities / user).read_text()
        return (self.data / "secrets" / user).read_text()

    def _override(self, user: str) -> str:
        return self.env.get(f"MQTT_{user.upper()}_PASSWORD", "")

    def start(self) -> None:
        """Run the entrypoint and wait for the broker's port."""
        self.log = (self.root / "entrypoint.log").open("ab")
        argv = [*self.interpreter, str(MOSQUITTO_DIR / "entrypoint.sh")]
        if os.geteuid() == 0:
            # compose mounts the Shelly identities into mqtt read-only
            argv = read_only(argv, [self.identities])
        self.process = subprocess.Popen(
            argv,
            env=self.environment(),
            stdout=self.log,
            stderr=self.log,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError((self.root / "entrypoint.log").read_text()) from None

    async def delivered(self, subscriber: str, publisher: str, topic: str, subscription: str | None = None) -> bool:
        """Whether a `probe` that `publisher` sends to `topic` reaches `subscriber`.

        The subscriber subscribes to `subscription` (default: `topic` itself).

        A denied publish still returns success to the publisher (MQTT 3.1.1): only the subscriber
        can tell, so the subscriber waits a bounded time for it.
        """

        def client(user: str) -> aiomqtt.Client:
            return aiomqtt.Client("127.0.0.1", self.port, username=user, password=self.password(user))

        async with client(subscriber) as sub:
            await sub.subscribe(subscription or topic, qos=1)
            async with client(publisher) as pub:
                await pub.publish(topic, b"probe", qos=1)

            async def first() -> bool:
                async for message in sub.messages:
                    if str(message.topic) == topic and message.payload == b"probe":
                        return True
                return False

            try:
                async with asyncio.timeout(1.5):
                    return await first()
            except TimeoutError:
                return False

    def stop(self) -> None:
        """Stop the broker."""
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None
        self.log.close()


#: The bridge's first-boot configuration as the image ships it.
BRIDGE_DEFAULT_CONFIG = REPO / "services" / "meter-bridge" / "default-config.yaml"


def release_bridge_config_text(data_dir: Path) -> str:
    """The shipped first-boot bridge config with its data volume (/data in the image) at `data_dir`:
    every file it keeps (spool, totals, the meters' roles: each named in it) goes there, never
    into this machine's own /data."""
    return BRIDGE_DEFAULT_CONFIG.read_text().replace("/data/", f"{data_dir}/")


def release_bridge_config(env: Mapping[str, str], data_dir: Path) -> Any:
    """The release's first-boot bridge config (a `BridgeConfig`) as the entrypoint's environment
    `env` fills it in, written to `data_dir`/config.yaml as the entrypoint writes /data/config.yaml,
    its data volume at `data_dir` (`release_bridge_config_text`)."""
    from meterbridge.config import load_config

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "config.yaml"
    path.write_text(release_bridge_config_text(data_dir))
    return load_config(path, env)
