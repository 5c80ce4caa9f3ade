"""A Home Assistant `update` entity per Shelly device: firmware version and "Install" in HA.

Follows HA's MQTT `update` platform: described here (`entity`), announced by the HA sink as
`homeassistant/update/hems/hems_<id>_firmware/config` (entity `update.hems_<id>_firmware`,
`device_class: firmware`); retained JSON state on
`<base>/shelly/<id>/firmware` with `installed_version`, `latest_version`, `title`, `in_progress`,
and `payload_install` (`install`) on `<base>/shelly/<id>/firmware/install`. `<id>` is the meter id of
the device's channel 0, so the entity joins that meter's HA device and its availability.

Versions come from the device over RPC on MQTT (`Shelly.GetDeviceInfo`, `Shelly.CheckForUpdate`,
stable channel) whenever it comes (back) online and every `CHECK_EVERY_S`. "Install" runs the
same single-device update as `meter-bridge shelly update` (one device at a time, refused while
demand response holds its relay) and reports progress through `in_progress`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from ...config import BridgeConfig
from ...errors import BridgeError, BrokerError, ParseError
from ...ha_entities import Device, EntityCatalog, EntityDescription
from ...ha_topics import Topics
from ...mqtt import MqttClient
from ...mqttsession import MqttSession
from .config import ShellyDeviceConfig, ShellySourceConfig
from .fleet import FleetLink
from .identity import DEVICE_ID, TOPIC_ROOT
from .parser import MeterNaming, device_slug
from .update import DeviceUpdate, UpdateSettings, check_device, flex_relay_prefixes, held_prefixes, update_device

_LOGGER = logging.getLogger(__name__)

PAYLOAD_INSTALL = "install"
#: How often the versions are asked again while a device stays online (the update server's
#: builds change rarely; a device coming back online is always asked at once).
CHECK_EVERY_S = 6 * 3600.0
#: The update entities' owner name in the entity catalog.
CATALOG_OWNER = "shelly_firmware"


@dataclass(slots=True)
class FirmwareDevice:
    """One device's update entity."""

    prefix: str
    meter_id: str
    name: str
    installed: str | None = None
    latest: str | None = None
    in_progress: bool = False
    last_error: str | None = None

    def state(self) -> dict[str, Any]:
        """The entity's JSON state (HA's `update` platform keys); why the last install did not
        happen shows as the release summary (HA caps it at 255 characters; it refuses null, seen on
        2026.10.4: "string value is None at 'release_summary'", so "" clears it)."""
        return {
            "installed_version": self.installed,
            "latest_version": self.latest or self.installed,
            "title": "Shelly firmware",
            "in_progress": self.in_progress,
            "release_summary": "" if self.last_error is None else f"Not installed: {self.last_error}"[:255],
        }


class ShellyFirmwareEntities:
    """Announces and serves the update entities of every Shelly device the bridge follows."""

    def __init__(
        self, config: BridgeConfig, check_every_s: float = CHECK_EVERY_S, catalog: EntityCatalog | None = None
    ) -> None:
        self.config = config
        #: Where the entities are described (the bridge's catalog: the HA sink announces them).
        self.catalog = EntityCatalog() if catalog is None else catalog
        self.topics = Topics(config.mqtt.base_topic, config.homeassistant.discovery_prefix)
        self.client_id = f"{config.client_id}-shelly-firmware"
        self.check_every_s = check_every_s
        self.sources = [s for s in config.sources if isinstance(s, ShellySourceConfig)]
        self.discover_source = next((s for s in self.sources if s.discover), None)
        self.devices: dict[str, FirmwareDevice] = {}
        for source in self.sources:
            for device in source.devices:
                self._add(source, device)
        self.flex_assets = flex_relay_prefixes(config)
        self.settings = UpdateSettings(stage="stable")
        self._install_gate = asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._link: FleetLink | None = None
        self._describe()

    def _add(self, source: ShellySourceConfig, device: ShellyDeviceConfig) -> FirmwareDevice:
        # the same naming as the source: channel 0's meter id and name
        device_id = device.id or device_slug(device.prefix)
        naming = MeterNaming(
            f"{source.id}_{device_id}", device.name or device_id.replace("_", " ").capitalize(), dict(device.channels)
        )
        entry = FirmwareDevice(device.prefix, naming.channel(0), naming.channel_name(0))
        self.devices[device.prefix] = entry
        return entry

    def state_topic(self, device: FirmwareDevice) -> str:
        """Retained JSON state of the entity."""
        return f"{self.topics.base}/shelly/{device.meter_id}/firmware"

    def command_topic(self, device: FirmwareDevice) -> str:
        """Where HA sends `install`."""
        return f"{self.state_topic(device)}/install"

    def entity(self, device: FirmwareDevice) -> EntityDescription:
        """The HA `update` entity of `device`, on its channel 0 meter's device."""
        return EntityDescription(
            "update",
            f"{device.meter_id}_firmware",
            "Firmware",
            Device(device.meter_id, device.name, manufacturer="Shelly"),
            state_topic=self.state_topic(device),
            command_topic=self.command_topic(device),
            availability=(self.topics.meter_availability(device.meter_id),),
            device_class="firmware",
            extra=(("payload_install", PAYLOAD_INSTALL),),
        )

    # -- the connection -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the entities until cancelled; reconnects with backoff (`MqttSession`)."""
        session = MqttSession(self.config.mqtt, self.client_id, name="Shelly firmware entities", maximum_s=60.0)
        try:
            await session.run(self._session, on_down=self._down)
        finally:
            self._down()

    def _down(self, _error: BridgeError | None = None) -> None:
        # the checks and installs of a lost connection end with it (an install's device
        # finishes on its own; the next connection asks its version again)
        self._link = None
        for task in list(self._tasks):
            task.cancel()

    async def _session(self, client: MqttClient) -> None:
        self._down()
        link = FleetLink(client, self.client_id, self.topics.base, self.sources[0].rpc_timeout_s)
        self._link = link
        for device in self.devices.values():
            await link.follow(device.prefix)
        if self.discover_source is not None:
            await client.subscribe(f"{TOPIC_ROOT}/+/online", qos=1)
        if self.flex_assets:
            await link.follow_flex()
        await client.subscribe(f"{self.topics.base}/shelly/+/firmware/install", qos=1)
        for device in self.devices.values():
            if device.installed is not None:
                await self._publish_state(device)
        self._spawn(self._recheck_loop(), "shelly-firmware-recheck")
        async for message in client.messages:
            await self._on_message(link, message.topic, message.payload, message.retain)

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_message(self, link: FleetLink, topic: str, payload: bytes, retained: bool) -> None:
        if topic.endswith("/online") and topic.removesuffix("/online") not in self.devices:
            prefix = topic.removesuffix("/online")
            if self.discover_source is None or not DEVICE_ID.match(prefix.removeprefix(f"{TOPIC_ROOT}/")):
                return
            self._add(self.discover_source, ShellyDeviceConfig(prefix=prefix))
            await link.follow(prefix)
            self._describe()
        if topic.endswith("/firmware/install"):
            meter_id = topic[len(f"{self.topics.base}/shelly/") : -len("/firmware/install")]
            target = next((d for d in self.devices.values() if d.meter_id == meter_id), None)
            if target is not None and payload.strip().decode(errors="replace") == PAYLOAD_INSTALL:
                self._spawn(self._install(target), f"shelly-firmware-install-{meter_id}")
            return
        before = link.online.get(topic.removesuffix("/online"))
        was_online = before.online if before is not None else False
        link.dispatch(topic, payload, retained)
        if topic.endswith("/online"):
            known = self.devices.get(topic.removesuffix("/online"))
            state = link.online.get(topic.removesuffix("/online"))
            if known is not None and state is not None and state.online and not was_online and not known.in_progress:
                self._spawn(self._refresh(known), f"shelly-firmware-check-{known.meter_id}")

    def _describe(self) -> None:
        self.catalog.describe(CATALOG_OWNER, [self.entity(device) for device in self.devices.values()])

    async def _publish_state(self, device: FirmwareDevice) -> None:
        if self._link is not None:
            body = json.dumps(device.state()).encode()
            with contextlib.suppress(BrokerError):  # published again on the next connection
                await self._link.client.publish(self.state_topic(device), body, qos=1, retain=True)

    async def _refresh(self, device: FirmwareDevice) -> None:
        link = self._link
        if link is None:
            return
        report = DeviceUpdate(device.prefix.removeprefix(f"{TOPIC_ROOT}/"), device.prefix)
        await check_device(link, report, self.settings.stage)
        if report.installed is None:
            _LOGGER.debug("Shelly %s: firmware check failed: %s", device.prefix, report.error)
            return
        device.installed = report.installed
        device.latest = report.offered or report.installed
        await self._publish_state(device)

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_every_s)
            for device in list(self.devices.values()):
                state = self._link.online.get(device.prefix) if self._link is not None else None
                if state is not None and state.online and not device.in_progress:
                    await self._refresh(device)

    async def _install(self, device: FirmwareDevice) -> None:
        link = self._link
        if link is None or device.in_progress:
            return
        async with self._install_gate:  # one device rebooting at a time from HA
            device.in_progress = True
            await self._publish_state(device)
            report = DeviceUpdate(device.prefix.removeprefix(f"{TOPIC_ROOT}/"), device.prefix)
            try:
                await check_device(link, report, self.settings.stage)
                if report.status == "available":
                    await update_device(link, report, self.settings, held_prefixes(self.flex_assets, link.flex_state))
                if report.status in ("failed", "held", "offline"):
                    _LOGGER.warning("Shelly %s: firmware update from Home Assistant %s: %s", device.prefix,
                                    report.status, report.error)  # fmt: skip
                else:
                    _LOGGER.info("Shelly %s: firmware %s (%s)", device.prefix, report.status, report.installed)
                device.last_error = report.error
            except (BridgeError, ParseError) as err:
                _LOGGER.warning("Shelly %s: firmware update from Home Assistant failed: %s", device.prefix, err)
            finally:
                device.in_progress = False
            try:
                await self._refresh(device)
            finally:
                await self._publish_state(device)


def firmware_entities(config: BridgeConfig, catalog: EntityCatalog | None = None) -> ShellyFirmwareEntities | None:
    """The update entities of the configured Shelly sources, described into `catalog`, or None
    (no Shelly source, or HA off)."""
    if not config.homeassistant.enabled or not any(isinstance(s, ShellySourceConfig) for s in config.sources):
        return None
    return ShellyFirmwareEntities(config, catalog=catalog)
