"""From the latest readings to each emulated plug's values: pure state, no I/O.

Plug kinds: `meter` (a bridge meter; a Home Assistant entity reaches a plug as a
meter of an `ha` source, which maps it to watts), `watts` (static), `aggregate` (the
sum of other plugs, which are then hidden from clients). Power is W, import positive;
a meter that exports reports negative power, as its readings do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from ...model import MeterAvailability, Quantity, Reading
from .config import KasaConfig, KasaPlugConfig
from .protocol import PlugSnapshot


@dataclass(slots=True)
class MeterValues:
    """The latest values of one meter. `energy_kwh` is the import total, else integrated power."""

    power_w: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    import_kwh: float | None = None
    integrated_kwh: float = 0.0
    power_ts: datetime | None = None
    available: bool = True

    def apply(self, reading: Reading) -> None:
        """Take one reading of this meter."""
        if reading.quantity is Quantity.POWER:
            if self.power_ts is not None and self.power_w is not None and reading.ts > self.power_ts:
                # Power is held until the next reading (what the sources promise).
                hours = (reading.ts - self.power_ts).total_seconds() / 3600
                self.integrated_kwh += max(0.0, self.power_w) * hours / 1000
            self.power_w, self.power_ts = reading.value, reading.ts
        elif reading.quantity is Quantity.VOLTAGE:
            self.voltage_v = reading.value
        elif reading.quantity is Quantity.CURRENT:
            self.current_a = reading.value
        elif reading.quantity is Quantity.ENERGY_IMPORT:
            self.import_kwh = reading.value


def device_id_for(plug: KasaPlugConfig) -> str:
    """The plug's device id: configured, else derived from its MAC (stable across restarts)."""
    if plug.device_id is not None:
        return plug.device_id
    return hashlib.sha1(f"meter-bridge:{plug.mac}".encode(), usedforsecurity=False).hexdigest().upper()


def hw_id_for(plug: KasaPlugConfig) -> str:
    """A stable 32-hex-digit hardware id derived from the MAC."""
    return hashlib.md5(f"hw:{plug.mac}".encode(), usedforsecurity=False).hexdigest().upper()


@dataclass(frozen=True, slots=True)
class _Values:
    power_w: float
    voltage_v: float
    current_a: float
    total_kwh: float


class PlugBook:
    """Latest meter values and the plugs built on them.

    `started` is a monotonic time in seconds (the plugs' boot); `snapshot(plug_id, now)`
    takes another (for `on_time` and static plugs' totals).
    """

    def __init__(self, config: KasaConfig, started: float) -> None:
        self._config = config
        self._started = started
        self._plugs = {plug.id: plug for plug in config.plugs}
        self._meters: dict[str, MeterValues] = {
            plug.meter: MeterValues() for plug in config.plugs if plug.meter is not None
        }
        members = {element for plug in config.plugs for element in plug.aggregate or []}
        #: Plugs clients see (aggregate members are folded into their aggregate).
        self.exposed: list[KasaPlugConfig] = [plug for plug in config.plugs if plug.id not in members]

    @property
    def meter_ids(self) -> set[str]:
        """Meters some plug reports."""
        return set(self._meters)

    def apply(self, event: Reading | MeterAvailability) -> None:
        """Take a reading or an availability change; ignores meters no plug uses."""
        meter = self._meters.get(event.meter_id)
        if meter is None:
            return
        if isinstance(event, MeterAvailability):
            meter.available = event.available
        else:
            meter.apply(event)

    def _values(self, plug: KasaPlugConfig, now: float) -> _Values | None:
        nominal = self._config.voltage_v
        if plug.watts is not None:
            hours = max(0.0, now - self._started) / 3600
            return _Values(plug.watts, nominal, abs(plug.watts) / nominal, max(0.0, plug.watts) * hours / 1000)
        if plug.meter is not None:
            meter = self._meters[plug.meter]
            if not meter.available or meter.power_w is None:
                return None
            voltage = meter.voltage_v if meter.voltage_v else nominal
            current = meter.current_a if meter.current_a is not None else abs(meter.power_w) / voltage
            total = meter.import_kwh if meter.import_kwh is not None else meter.integrated_kwh
            return _Values(meter.power_w, voltage, current, total)
        parts = [v for element in plug.aggregate or [] if (v := self._values(self._plugs[element], now)) is not None]
        if not parts:
            return None
        return _Values(
            sum(p.power_w for p in parts),
            sum(p.voltage_v for p in parts) / len(parts),
            sum(p.current_a for p in parts),
            sum(p.total_kwh for p in parts),
        )

    def snapshot(self, plug_id: str, now: float) -> PlugSnapshot | None:
        """What `plug_id` reports at monotonic time `now`; None while it has no data."""
        plug = self._plugs[plug_id]
        values = self._values(plug, now)
        if values is None:
            return None
        return PlugSnapshot(
            alias=plug.alias,
            mac=plug.mac,
            device_id=device_id_for(plug),
            hw_id=hw_id_for(plug),
            power_w=round(values.power_w, 3),
            voltage_v=round(values.voltage_v, 3),
            current_a=round(values.current_a, 4),
            total_kwh=round(values.total_kwh, 4),
            on_time_s=int(max(0.0, now - self._started)),
        )
