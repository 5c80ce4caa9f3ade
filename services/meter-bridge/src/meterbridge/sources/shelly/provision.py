"""`meter-bridge shelly provision`: point a fleet of Shelly devices at the broker over HTTP RPC.

Per host: `Shelly.GetDeviceInfo` (needs no auth); the device's own MQTT identity (user =
device id, prefix `shelly/<device id>`, a generated password kept in the identities
directory the broker reads, see `identity`), made once and kept; wait until the broker
accepts it; `MQTT.SetConfig` unless the device already has the wanted settings and is
connected; optionally `Shelly.SetAuth` (admin password); removes the hourly-energy script
earlier releases installed (`RETIRED_SCRIPT_NAME`); `Shelly.Reboot` only
when the device says a restart is required; then wait until `<prefix>/online` is `true` on
the broker. Running it twice changes nothing the second time. Secrets are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ...errors import AuthError, BridgeError, BrokerError, ConfigError
from ...logutil import redact
from ...mqtt import MqttClient, make_client
from ...sections import MqttConfig
from .fleet import add_scan_arguments, bridge_broker, scan_from_args
from .identity import DEFAULT_IDENTITIES_DIR, DEVICE_ID, IDENTITIES_DIR_ENV, ShellyIdentity, ShellyIdentityStore
from .parser import parse_device_info
from .rpc import ADMIN_USER, ShellyHttpRpc, auth_ha1

#: The hourly import/export script earlier releases installed (`--script`). It published the
#: hour's differences of the very energy counters the bridge already reads from every
#: notification (`emdata`/`em1data`/`switch`/`pm1` totals, channel 0 only), so its totals
#: were never more than what HA's statistics of the energy sensors and InfluxDB's hourly
#: downsampling already hold; provisioning now removes it where it finds it.
RETIRED_SCRIPT_NAME = "hems_energy"
#: Where it published (retained), below the device's prefix.
RETIRED_SCRIPT_TOPIC = "hems/energy_hourly"


@dataclass(frozen=True, slots=True)
class ProvisionSettings:
    """What every device should get. Admin passwords come from the environment."""

    mqtt_server: str
    identities: ShellyIdentityStore
    admin_password: str | None = None
    new_admin_password: str | None = None
    timeout_s: float = 10.0
    #: How long to wait for the broker to take a new identity in (it polls every 5 s).
    identity_wait_s: float = 30.0


@dataclass(slots=True)
class ProvisionResult:
    """What was done to one host (one row of the printed table); never holds secrets."""

    host: str
    prefix: str | None = None
    device_id: str = "-"
    model: str = "-"
    identity: str = "-"
    mqtt: str = "-"
    auth: str = "-"
    script: str = "-"
    reboot: str = "-"
    online: str = "-"
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Provisioned and (when waited for) online."""
        return self.error is None and self.online in ("yes", "-")


async def _authenticated(host: str, settings: ProvisionSettings, auth_enabled: bool) -> tuple[ShellyHttpRpc, str]:
    """An RPC client that the device accepts, and whether the new admin password is already set."""
    if not auth_enabled:
        return ShellyHttpRpc(host, None, settings.timeout_s), "none"
    candidates = [(settings.new_admin_password, "unchanged"), (settings.admin_password, "old")]
    for password, state in candidates:
        if not password:
            continue
        rpc = ShellyHttpRpc(host, password, settings.timeout_s)
        try:
            await rpc.call("MQTT.GetConfig")
        except AuthError:
            await rpc.close()
            continue
        except BaseException:
            await rpc.close()
            raise
        return rpc, state
    if not settings.admin_password and not settings.new_admin_password:
        raise AuthError(f"{host}: the device has an admin password: set SHELLY_ADMIN_PASSWORD")
    raise AuthError(f"{host}: authentication failed (wrong admin password)")


async def _ensure_mqtt(
    rpc: ShellyHttpRpc, settings: ProvisionSettings, identity: ShellyIdentity, new_identity: bool
) -> tuple[bool, bool]:
    """Set the MQTT config when it differs or the identity is new; (whether it was set, whether
    the device asks for a restart)."""
    wanted: dict[str, Any] = {
        "enable": True,
        "server": settings.mqtt_server,
        "client_id": identity.device_id,
        "user": identity.username,
        "topic_prefix": identity.prefix,
        "rpc_ntf": True,
        "status_ntf": False,
        "enable_control": True,
    }
    current = await rpc.call("MQTT.GetConfig")
    status = await rpc.call("MQTT.GetStatus")
    # The device never returns the password: a matching config that is connected proves it works
    # (the broker accepts that user with the stored password only), unless the password is new.
    same = isinstance(current, dict) and all(current.get(k) == v for k, v in wanted.items())
    if same and not new_identity and isinstance(status, dict) and status.get("connected") is True:
        return False, False
    result = await rpc.call("MQTT.SetConfig", {"config": {**wanted, "pass": identity.password}})
    return True, bool(isinstance(result, dict) and result.get("restart_required"))


async def _remove_retired_script(rpc: ShellyHttpRpc) -> str:
    """Stop and delete the retired hourly script if the device has it; what was done."""
    listing = await rpc.call("Script.List")
    scripts = listing.get("scripts", []) if isinstance(listing, dict) else []
    removed = "-"
    for script in scripts:
        if isinstance(script, dict) and script.get("name") == RETIRED_SCRIPT_NAME:
            if script.get("running"):
                await rpc.call("Script.Stop", {"id": script["id"]})
            await rpc.call("Script.Delete", {"id": script["id"]})
            removed = "removed"
    return removed


class OnlineWatcher:
    """Follows `<prefix>/online` of the devices being provisioned on the bridge's broker."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client
        self._state: dict[str, tuple[bool, bool]] = {}  # prefix -> (online, seen live since watch)
        self._changed = asyncio.Event()

    async def watch(self, prefix: str) -> None:
        """Subscribe to the device's `online` (call before rebooting it)."""
        await self._client.subscribe(f"{prefix}/online", qos=1)

    async def pump(self) -> None:
        """Read messages until cancelled."""
        async for message in self._client.messages:
            topic = message.topic
            if topic.endswith("/online"):
                self._state[topic[: -len("/online")]] = (
                    message.payload.strip() == b"true",
                    not message.retain,
                )
                self._changed.set()

    async def wait(self, prefix: str, fresh: bool, timeout_s: float) -> bool:
        """Wait until the device says it is online (`fresh`: a live message, not a retained one)."""
        deadline = time.monotonic() + timeout_s
        while True:
            online, live = self._state.get(prefix, (False, False))
            if online and (live or not fresh):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))


async def broker_accepts(mqtt: MqttConfig, identity: ShellyIdentity, timeout_s: float) -> bool:
    """Whether the broker lets `identity` log in within `timeout_s` (it reloads new ones every few s).

    Logs in with a client id of its own, so a connected device is not thrown off.
    """
    config = mqtt.model_copy(update={"username": identity.username, "password": SecretStr(identity.password)})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with make_client(config, f"{identity.device_id}-provision-check"):
                return True
        except BrokerError:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


async def provision_host(
    host: str,
    settings: ProvisionSettings,
    mqtt: MqttConfig | None = None,
    watcher: OnlineWatcher | None = None,
) -> tuple[ProvisionResult, bool]:
    """Provision one device; its result row and whether it was rebooted. Never raises `BridgeError`.

    With `mqtt` (the bridge's broker), first wait until the broker accepts the device's identity,
    so the device's first login after its reboot works; `watcher` follows the device's `online`
    from before any reboot.
    """
    result = ProvisionResult(host)
    rebooted = False
    try:
        async with ShellyHttpRpc(host, None, settings.timeout_s) as anonymous:
            info_raw = await anonymous.call("Shelly.GetDeviceInfo")
        info = parse_device_info(info_raw)
        result.device_id, result.model = info.device_id, info.model or info.app or "-"
        if not DEVICE_ID.match(info.device_id):
            raise ConfigError([f"{host}: device id {info.device_id!r} is not a Shelly Gen2+ id: no MQTT identity"])
        auth_enabled = bool(info_raw.get("auth_en")) if isinstance(info_raw, dict) else False
        rpc, auth_state = await _authenticated(host, settings, auth_enabled)
        try:
            # only for a device we may configure: no identity for a wrong admin password
            identity, new_identity = settings.identities.get_or_create(info.device_id)
            result.identity = "new" if new_identity else "kept"
            result.prefix = identity.prefix
            if watcher is not None:
                await watcher.watch(identity.prefix)
            if mqtt is not None and not await broker_accepts(mqtt, identity, settings.identity_wait_s):
                raise ConfigError(
                    [
                        f"{host}: the broker did not accept the identity of {info.device_id} within "
                        f"{settings.identity_wait_s:g} s: does the mqtt service mount {settings.identities.directory}?"
                    ]
                )
            changed, restart = await _ensure_mqtt(rpc, settings, identity, new_identity)
            result.mqtt = "set" if changed else "unchanged"
            result.script = await _remove_retired_script(rpc)
            if settings.new_admin_password:
                if auth_state == "unchanged":
                    result.auth = "unchanged"
                else:
                    await rpc.call(
                        "Shelly.SetAuth",
                        {
                            "user": ADMIN_USER,
                            "realm": info.device_id,
                            "ha1": auth_ha1(info.device_id, settings.new_admin_password),
                        },
                    )
                    result.auth = "set"
                    # From here on the device only accepts the new password.
                    await rpc.close()
                    rpc = ShellyHttpRpc(host, settings.new_admin_password, settings.timeout_s)
            if restart:
                await rpc.call("Shelly.Reboot")
                rebooted = True
            result.reboot = "yes" if rebooted else "no"
        finally:
            await rpc.close()
    except BridgeError as err:
        result.error = redact(str(err))
    except (KeyError, TypeError, ValueError) as err:
        result.error = redact(f"{host}: unexpected answer: {err!r}")
    return result, rebooted


async def provision(
    hosts: Sequence[str], settings: ProvisionSettings, mqtt: MqttConfig | None, wait_s: float = 60.0
) -> list[ProvisionResult]:
    """Provision every host; with `mqtt`, check each identity on the broker and wait for each device."""
    if mqtt is None:
        return [(await provision_host(host, settings))[0] for host in hosts]
    results: list[ProvisionResult] = []
    async with make_client(mqtt, f"meter-bridge-provision-{os.getpid()}") as client:
        watcher = OnlineWatcher(client)
        pump = asyncio.create_task(watcher.pump(), name="shelly-provision-online")
        try:
            for host in hosts:
                result, rebooted = await provision_host(host, settings, mqtt, watcher)
                if result.script == "removed" and result.prefix is not None:
                    # the script published its hours retained: drop the last one from the broker
                    await client.publish(f"{result.prefix}/{RETIRED_SCRIPT_TOPIC}", b"", qos=1, retain=True)
                if result.error is None and result.prefix is not None:
                    online = await watcher.wait(result.prefix, fresh=rebooted, timeout_s=wait_s)
                    result.online = "yes" if online else "TIMEOUT"
                    if not online:
                        result.error = f"{host}: not online on MQTT within {wait_s:g} s"
                results.append(result)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokerError):
                await pump
    return results


def format_table(results: Sequence[ProvisionResult]) -> str:
    """The per-host result table."""
    header = ("host", "device", "model", "identity", "mqtt", "auth", "script", "reboot", "online", "result")
    rows = [
        (
            r.host, r.device_id, r.model, r.identity, r.mqtt, r.auth, r.script, r.reboot, r.online,
            "ok" if r.ok else "FAILED",
        )
        for r in results
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines += [f"error: {r.error}" for r in results if r.error]
    return "\n".join(lines)


def read_fleet(path: Path) -> list[str]:
    """A fleet list: one `HOST` per line, `#` comments; raises `ConfigError` naming file and line."""
    hosts: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError([f"{path}:1: cannot read: {err}"]) from err
    for number, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) > 1:
            # Earlier releases took `HOST PREFIX`: the prefix is now always shelly/<device id>,
            # the only one the broker lets the device use.
            raise ConfigError([f"{path}:{number}: expected `HOST` (the topic prefix is always shelly/<device id>)"])
        hosts.append(parts[0])
    return hosts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `meter-bridge shelly provision`."""
    parser.add_argument("hosts", nargs="*", metavar="HOST", help="device address (`ip` or `ip:port`)")
    parser.add_argument("--from", dest="fleet", type=Path, help="fleet list: one `HOST` per line")
    parser.add_argument("--all-found", action="store_true", help="also every device `shelly scan` finds (same options)")
    add_scan_arguments(parser)
    parser.add_argument("--mqtt-server", required=True, help="broker address as the devices reach it (`host:port`)")
    parser.add_argument(
        "--identities",
        type=Path,
        help=f"directory of the devices' MQTT identities, shared with the broker (default ${IDENTITIES_DIR_ENV} "
        f"or {DEFAULT_IDENTITIES_DIR})",
    )
    parser.add_argument(
        "--admin-password-env", default="SHELLY_ADMIN_PASSWORD", help="variable holding the devices' admin password"
    )
    parser.add_argument(
        "--new-admin-password-env", help="set the devices' admin password to the value of this variable"
    )
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the devices on MQTT")
    parser.add_argument("--wait-s", type=float, default=90.0, help="how long to wait for each device (s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout per call (s)")


def run_provision(args: argparse.Namespace) -> int:
    """`meter-bridge shelly provision`: exit 0 when every host is done, 1 otherwise, 2 on bad input."""
    try:
        hosts = list(args.hosts) + (read_fleet(args.fleet) if args.fleet else [])
        if args.all_found:
            found = asyncio.run(scan_from_args(args))
            print(f"scan: {len(found)} Gen2+ device(s): {', '.join(d.host for d in found) or '-'}", file=sys.stderr)
            hosts += [d.host for d in found if d.host not in hosts]
            if not hosts:
                print("nothing found: nothing to provision")
                return 0
        if not hosts:
            raise ConfigError(["no hosts: give HOST arguments, --from FILE or --all-found"])
        new_admin = None
        if args.new_admin_password_env:
            new_admin = os.environ.get(args.new_admin_password_env)
            if not new_admin:
                raise ConfigError([f"{args.new_admin_password_env} is not set"])
        mqtt = None if args.no_wait else bridge_broker(args.config)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return 2
    settings = ProvisionSettings(
        mqtt_server=args.mqtt_server,
        identities=ShellyIdentityStore(args.identities) if args.identities else ShellyIdentityStore.from_environment(),
        admin_password=os.environ.get(args.admin_password_env) or None,
        new_admin_password=new_admin,
        timeout_s=args.timeout,
    )
    try:
        results = asyncio.run(provision(hosts, settings, mqtt, args.wait_s))
    except BrokerError as err:
        print(redact(f"cannot reach the MQTT broker to wait for the devices: {err}"), file=sys.stderr)
        return 1
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1
