"""The configuration sections every part of the bridge shares (broker, site, InfluxDB, ...).

The bottom of the schema: these models import nothing of ours but `configbase`, so a
transport, a source or a sink can take the one section it reads without importing the
whole schema (`config.BridgeConfig`, which lists every family and therefore sits above
them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from .configbase import Identifier, StrictModel


class SiteConfig(StrictModel):
    """Who this appliance belongs to."""

    id: Identifier = Field(default="home", description="Site id, part of every Home Assistant unique id.")
    name: str = Field(default="Home", description="Human name of the site.")
    currency: str = Field(
        default="GBP", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of prices (`GBP`, `USD`, `EUR`)."
    )


class MqttTlsConfig(StrictModel):
    """TLS towards the broker (off on the appliance: the broker is on the device's own network)."""

    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the broker (default: system CAs).")
    insecure: bool = Field(default=False, description="Skip hostname verification (test set-ups only).")


class MqttConfig(StrictModel):
    """The MQTT broker the bridge publishes to. Anonymous access is not supported."""

    host: str = Field(default="localhost", description="Broker host name.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    username: str = Field(min_length=1, description="MQTT user (required).")
    password: SecretStr = Field(description="MQTT password (required; use `${MQTT_PASSWORD}`).")
    base_topic: str = Field(
        default="hems", pattern=r"^[^#+/][^#+]*[^#+/]$|^[^#+/]$", description="Prefix of every topic the bridge owns."
    )
    client_id: str | None = Field(default=None, description="MQTT client id (default: `meter-bridge-<site id>`).")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive interval.")
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig, description="TLS settings.")


class HomeAssistantConfig(StrictModel):
    """How readings reach Home Assistant (MQTT discovery + retained JSON state)."""

    enabled: bool = Field(default=True, description="Publish discovery and state for Home Assistant.")
    discovery_prefix: str = Field(default="homeassistant", description="HA's MQTT discovery prefix.")
    min_interval_s: float = Field(
        default=5.0, ge=0, description="Least time between two state messages of one meter (0: publish every reading)."
    )
    power_deadband_w: float = Field(
        default=50.0, ge=0, description="A power change larger than this is published at once, ignoring the interval."
    )
    recorded_interval_s: int = Field(
        # 300 s: what the recorder keeps is what the SD card writes, twice (stored, then purged
        # after 10 days): at 60 s the nightly purge alone wrote ~29 MB (docs/benchmarks.md);
        # InfluxDB keeps every reading at full resolution
        default=300,
        ge=10,
        le=300,
        description=(
            "Clock step of the recorded state (`<base>/meter/<id>/recorded`: totals and the mean power that Home"
            " Assistant records), published just before each multiple of it; must divide 300."
        ),
    )

    @field_validator("recorded_interval_s")
    @classmethod
    def _divides_five_minutes(cls, value: int) -> int:
        # HA compiles statistics every 5 minutes from the last state before each boundary: a step
        # that does not divide 300 s would leave some boundary without a fresh total
        if 300 % value:
            raise ValueError("must divide 300 (10, 12, 15, 20, 25, 30, 50, 60, 75, 100, 150 or 300)")
        return value


class HealthConfig(StrictModel):
    """The local health endpoint (`/healthz`, `/metrics`) used by `meter-bridge status`."""

    enabled: bool = Field(default=True, description="Serve the health endpoint.")
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8099, ge=0, le=65535, description="Port to listen on (0: any free port).")


class LoggingConfig(StrictModel):
    """Log output."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    format: Literal["text", "json"] = Field(default="text", description="`json` for fleet log shipping.")


class HubConfig(StrictModel):
    """The in-memory fan-out from sources to sinks."""

    queue_size: int = Field(
        default=10_000, ge=10, description="Events held per sink before the oldest are dropped (and counted)."
    )


class InfluxConfig(StrictModel):
    """The InfluxDB 2 write path (`/api/v2/write`): batched line protocol from a durable spool."""

    enabled: bool = Field(default=True, description="Write readings to InfluxDB.")
    url: str = Field(
        default="http://127.0.0.1:8086",
        description="InfluxDB base URL (the bridge runs on the host network; InfluxDB is published on its loopback).",
    )
    org: str = Field(default="hems", min_length=1, description="Organisation name (or id) to write to.")
    org_id: str | None = Field(
        default=None, description="Organisation id for the replication monitor (default: looked up by `org`)."
    )
    bucket: str = Field(default="meters", min_length=1, description="Bucket the readings go to.")
    token: SecretStr = Field(description="Write token (required; use `${INFLUX_TOKEN}`).")
    batch_size: int = Field(default=5000, ge=1, le=50_000, description="Most lines in one write request.")
    flush_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Longest time a line waits for its batch to fill; keep it below `spool.sync_interval_s`.",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Timeout of one write request.")
    max_retry_delay_s: float = Field(
        default=60.0, ge=1, le=3600, description="Longest wait between two attempts after 5xx/429/connection errors."
    )
    replication_poll_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between polls of `/api/v2/replications` for the Home Assistant sensors (0: off).",
    )


class SpoolConfig(StrictModel):
    """The on-disk store (SQLite, WAL) of every line InfluxDB has not acknowledged yet."""

    path: Path = Field(default=Path("/data/spool/influx.sqlite"), description="SQLite file of the spool.")
    max_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=64 * 1024,
        description="Most (compressed) bytes spooled; when full the oldest are dropped and counted.",
    )
    sync_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Longest time an unacknowledged reading is held only in memory (what `kill -9` may lose).",
    )
    quarantine_max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=0, description="Most bytes of rejected (4xx) batches kept for inspection."
    )


class TotalsConfig(StrictModel):
    """The one rule every reading passes (`sources.totals`): its state file and its limits."""

    path: Path | None = Field(
        default=None,
        description=(
            "File keeping each total's last counter and offset across restarts; the release sets "
            "`/data/totals.json` (unset: kept in memory only, for tests and one-off runs)."
        ),
    )
    save_interval_s: float = Field(
        default=900.0,
        gt=0,
        le=86400,
        description=(
            "Longest time a changed counter is kept only in memory (an offset is saved at once); each save "
            "sends the SD card 68 KB with ext4's journal (6.7 MB a day at 15 minutes)."
        ),
    )
    max_power_kw: float = Field(
        default=100.0,
        gt=0,
        description="Most power any one meter can draw: a total rising faster is held as a possible new counter.",
    )


@dataclass(frozen=True, slots=True)
class MqttContext:
    """What a component that talks to the broker and announces to Home Assistant needs of the bridge.

    Built by `BridgeConfig.mqtt_context`; components take this instead of the whole config.
    """

    site: SiteConfig
    mqtt: MqttConfig
    homeassistant: HomeAssistantConfig

    @property
    def client_id(self) -> str:
        """The MQTT client id the bridge uses (components append their own suffix)."""
        return self.mqtt.client_id or f"meter-bridge-{self.site.id}"
