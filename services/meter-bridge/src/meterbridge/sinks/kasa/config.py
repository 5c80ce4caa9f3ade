"""The `kasa` config section: the emulated plugs and where they listen.

Kept free of runtime imports so that `meterbridge.config` can include it.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from typing import Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ...configbase import Identifier, StrictModel

#: Sense handles about this many plugs well; more is allowed but warned about.
SENSE_PLUG_LIMIT = 20

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$")
_HEX40 = re.compile(r"^[0-9A-Fa-f]{40}$")


def random_mac() -> str:
    """A random unicast, locally administered MAC (`x2:`, `x6:`, `xA:` or `xE:` first octet)."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0b11111100) | 0b00000010  # unicast, locally administered
    return ":".join(f"{o:02X}" for o in octets)


def random_device_id() -> str:
    """A random 40-hex-digit Kasa device id."""
    return secrets.token_hex(20).upper()


class KasaPlugConfig(StrictModel):
    """One emulated HS110 plug. Exactly one of `meter`, `watts` or `aggregate` sets its value."""

    id: Identifier = Field(description="Plug id (aggregates list their elements by id).")
    alias: str = Field(min_length=1, max_length=64, description="Name shown by Sense and Kasa apps.")
    mac: str = Field(description="MAC address (required; Sense tells plugs apart by it). `meter-bridge kasa new-plug`.")
    device_id: str | None = Field(
        default=None,
        description="40 hex digits, or the MAC itself as SenseLink's plugs sent (default: derived from the MAC, "
        "so it stays the same).",
    )
    meter: Identifier | None = Field(
        default=None, description="Report this bridge meter's power, voltage, current and import total."
    )
    watts: float | None = Field(default=None, description="Report a constant power (W).")
    aggregate: list[Identifier] | None = Field(
        default=None, description="Report the sum of these plugs (which are then not reported on their own)."
    )
    address: str | None = Field(
        default=None,
        description="IP address of this host that serves only this plug (UDP and TCP), so Kasa clients that key "
        "devices by IP (python-kasa, Home Assistant) can read it. Must be configured on the host.",
    )

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str) -> str:
        if not _MAC.match(value):
            raise ValueError("must be six colon-separated hex octets, e.g. 52:C7:BF:00:00:01")
        return value.upper()

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str | None) -> str | None:
        # SenseLink answered with the plug's MAC as deviceId (senselink/plug_instance.py,
        # generate_response); a migrated plug keeps that so Sense sees the same device.
        if value is not None and not (_HEX40.match(value) or _MAC.match(value)):
            raise ValueError("must be 40 hex digits (or the plug's MAC, as SenseLink sent)")
        return None if value is None else value.upper()

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.IPv4Address(value)  # raises ValueError with a clear message
        return value

    @model_validator(mode="after")
    def _one_value(self) -> Self:
        given = [k for k in ("meter", "watts", "aggregate") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of meter, watts, aggregate (got {', '.join(given) or 'none'})")
        return self


def _error(loc: tuple[str | int, ...], message: str) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("kasa_plugs", message), loc=loc, input=None)


class KasaConfig(StrictModel):
    """Emulated Kasa HS110 plugs for a Sense monitor (UDP) and Kasa clients such as Home Assistant (TCP)."""

    enabled: bool = Field(default=False, description="Serve the emulated plugs.")
    bind: str = Field(
        default="0.0.0.0",  # noqa: S104 - Sense finds plugs by LAN broadcast
        description="Address to listen on (UDP and TCP); 0.0.0.0 receives Sense's broadcasts.",
    )
    port: int = Field(default=9999, ge=1, le=65535, description="UDP and TCP port (Kasa devices use 9999).")
    voltage_v: float = Field(default=230.0, gt=0, description="Voltage reported when the plug's meter gives none (V).")
    max_queries_per_s: float = Field(
        default=200.0, gt=0, description="UDP queries answered per second at most; the rest are dropped and counted."
    )
    plugs: list[KasaPlugConfig] = Field(default_factory=list, description="The plugs.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Errors point at the offending entry so check-config prints its line.
        errors: list[InitErrorDetails] = []
        ids: dict[str, int] = {}
        macs: dict[str, int] = {}
        addresses: dict[str, int] = {}
        for index, plug in enumerate(self.plugs):
            if plug.id in ids:
                errors.append(_error(("plugs", index, "id"), f"duplicate plug id {plug.id!r} (plug {ids[plug.id]})"))
            ids.setdefault(plug.id, index)
            if plug.mac in macs:
                errors.append(_error(("plugs", index, "mac"), f"duplicate mac {plug.mac} (plug {macs[plug.mac]})"))
            macs.setdefault(plug.mac, index)
            if plug.address is not None:
                if plug.address in addresses:
                    errors.append(
                        _error(("plugs", index, "address"), f"address used by plug {addresses[plug.address]}")
                    )
                addresses.setdefault(plug.address, index)
        member_of: dict[str, int] = {}
        for index, plug in enumerate(self.plugs):
            for position, element in enumerate(plug.aggregate or []):
                loc: tuple[str | int, ...] = ("plugs", index, "aggregate", position)
                target = ids.get(element)
                if target is None:
                    errors.append(_error(loc, f"no plug has id {element!r}"))
                elif self.plugs[target].aggregate is not None:
                    errors.append(_error(loc, f"{element!r} is an aggregate: aggregates cannot be nested"))
                elif element in member_of:
                    errors.append(
                        _error(loc, f"{element!r} is already in aggregate {self.plugs[member_of[element]].id!r}")
                    )
                else:
                    member_of[element] = index
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self
