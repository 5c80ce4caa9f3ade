"""Idempotent provisioning of the appliance's InfluxDB 2 (`meter-bridge influx provision`).

Runs on every boot after InfluxDB's own first-boot setup (org, admin token) and
reconciles what exists with what the variables ask for; a second run changes nothing:

- buckets `meters` (raw, retention `INFLUX_RETENTION`), `meters_1h` (retention
  `INFLUX_DOWNSAMPLED_RETENTION`, default forever) and `homeassistant` (HA's own);
- task `hems_downsample_1h`: hourly means of every field of `meters` into `meters_1h`
  (running totals, gas and heat energy among them, take the hour's last value: a mean of a running total means nothing);
- least-privilege tokens, each written to `<INFLUX_TOKENS_DIR>/<name>/<name>.token` (0600; on
  a device each `<name>` directory is a volume that only that token's consumer also mounts):
  `bridge` (write `meters`, read replications for the uplink sensors, read the org),
  `homeassistant` (read/write `homeassistant`), `dashboard` (read the three buckets).
  A token is re-issued when its permissions differ or its file is missing/different;
- edge replication when `INFLUX_CLOUD_URL`, `INFLUX_CLOUD_TOKEN`, `INFLUX_CLOUD_ORG_ID`
  and `INFLUX_CLOUD_BUCKET` are all set: one remote `hems-cloud` (changed in place when the
  variables change: the API never returns the cloud token, so a short SHA-256
  fingerprint of it lives in the remote's description) and one replication
  `hems-cloud-meters` from `meters_1h` (`INFLUX_REPLICATION_SOURCE=downsampled`, the default:
  what a community settles and compares on, 1/1,800 of the points of meters read every 2 s and
  of the replication queue's writes on the SD card) or from `meters`
  (`INFLUX_REPLICATION_SOURCE=raw`), with `INFLUX_REPLICATION_MAX_QUEUE_BYTES` and
  `INFLUX_REPLICATION_MAX_AGE_S`. Unset them and both are removed. Replicating a downsampled
  bucket is InfluxDB's own recipe ("Replicate downsampled or processed data",
  docs.influxdata.com/influxdb/v2/write-data/replication/replicate-data/): a stream replicates
  every write to its bucket, the task's `to()` among them.

Talks to InfluxDB through influxdb-client's API and service classes. Replications are
listed from the raw JSON: the client's model predates 2.7's `maxAgeSeconds`.
Raises `ProvisionError` (a `BridgeError`) with the step that failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BridgeError
from .model import TOTALS

REMOTE_NAME = "hems-cloud"
REPLICATION_NAME = "hems-cloud-meters"
TASK_NAME = "hems_downsample_1h"
MANAGED = "managed by hems provisioning"
MIN_QUEUE_BYTES = 33_554_430


class ProvisionError(BridgeError):
    """Provisioning could not reconcile InfluxDB (names the step and the endpoint)."""


def parse_duration_s(text: str) -> int:
    """`30d`, `12h`, `90m`, `3600s`, `3600` or `0` (forever) as seconds; raises `ValueError`."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 0 for forever)")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return int(match.group(1)) * factor


def replication_source(text: str) -> str:
    """`INFLUX_REPLICATION_SOURCE`: `downsampled` (the hourly bucket) or `raw`; ValueError otherwise."""
    if text not in ("downsampled", "raw"):
        raise ValueError(f"INFLUX_REPLICATION_SOURCE: {text!r} is neither downsampled nor raw")
    return text


@dataclass(frozen=True, slots=True)
class CloudTarget:
    """Where `meters` replicates to."""

    url: str
    token: str
    org_id: str
    bucket: str
    max_queue_bytes: int
    max_age_s: int
    #: Replicate the raw bucket (`meters`) instead of the hourly one (`meters_1h`).
    raw: bool = False

    @property
    def fingerprint(self) -> str:
        """A short hash of the token: lets a changed token be noticed without storing it."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ProvisionSettings:
    """Everything provisioning reads from the environment (see `from_env`)."""

    url: str
    admin_token: str
    org: str = "hems"
    bucket: str = "meters"
    retention_s: int = 90 * 86400
    downsampled_bucket: str = "meters_1h"
    downsampled_retention_s: int = 0
    ha_bucket: str = "homeassistant"
    ha_retention_s: int = 365 * 86400
    tokens_dir: Path = Path("/run/hems/influx-tokens")
    cloud: CloudTarget | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProvisionSettings:
        """Settings from `INFLUX_*` variables; raises `ProvisionError` on a missing or bad one."""
        env = os.environ if env is None else env
        token = env.get("INFLUX_ADMIN_TOKEN", "")
        token_file = env.get("INFLUX_ADMIN_TOKEN_FILE", "")
        if not token and token_file:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as err:
                raise ProvisionError(f"cannot read INFLUX_ADMIN_TOKEN_FILE {token_file}: {err}") from err
        if not token:
            raise ProvisionError("INFLUX_ADMIN_TOKEN (or INFLUX_ADMIN_TOKEN_FILE) is required")
        cloud_keys = ("INFLUX_CLOUD_URL", "INFLUX_CLOUD_TOKEN", "INFLUX_CLOUD_ORG_ID", "INFLUX_CLOUD_BUCKET")
        cloud = None
        try:
            if all(env.get(key) for key in cloud_keys):
                cloud = CloudTarget(
                    url=env["INFLUX_CLOUD_URL"],
                    token=env["INFLUX_CLOUD_TOKEN"],
                    org_id=env["INFLUX_CLOUD_ORG_ID"],
                    bucket=env["INFLUX_CLOUD_BUCKET"],
                    max_queue_bytes=max(
                        MIN_QUEUE_BYTES, int(env.get("INFLUX_REPLICATION_MAX_QUEUE_BYTES", "67108860"))
                    ),
                    max_age_s=parse_duration_s(env.get("INFLUX_REPLICATION_MAX_AGE_S", "604800")),
                    raw=replication_source(env.get("INFLUX_REPLICATION_SOURCE", "downsampled")) == "raw",
                )
            return cls(
                url=env.get("INFLUX_URL", "http://localhost:8086"),
                admin_token=token,
                org=env.get("INFLUX_ORG", "hems"),
                bucket=env.get("INFLUX_BUCKET", "meters"),
                retention_s=parse_duration_s(env.get("INFLUX_RETENTION", "90d")),
                downsampled_bucket=env.get("INFLUX_DOWNSAMPLED_BUCKET", "meters_1h"),
                downsampled_retention_s=parse_duration_s(env.get("INFLUX_DOWNSAMPLED_RETENTION", "0")),
                ha_bucket=env.get("INFLUX_HA_BUCKET", "homeassistant"),
                tokens_dir=Path(env.get("INFLUX_TOKENS_DIR", "/run/hems/influx-tokens")),
                cloud=cloud,
            )
        except ValueError as err:
            raise ProvisionError(str(err)) from err


def token_path(tokens_dir: Path, name: str) -> Path:
    """Where token `name` is handed over: its consumer's own directory (a volume on a device)."""
    return tokens_dir / name / f"{name}.token"


def write_token(path: Path, token: str) -> None:
    """Write `token` to `path` as 0600 from the first byte, replacing any old file at once; raises
    `ProvisionError` naming the path."""
    temporary = path.with_name(f".{path.name}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        os.chmod(temporary, 0o600)  # O_CREAT's mode only applies to a new file
        os.replace(temporary, path)
    except OSError as err:
        raise ProvisionError(f"cannot write the InfluxDB token {path}: {err}") from err


def downsample_flux(settings: ProvisionSettings) -> str:
    """The Flux of the hourly downsampling task (running totals, `model.TOTALS`, keep the hour's last value)."""
    totals = sorted(quantity.value for quantity in TOTALS)
    is_total = " or ".join(f'r._field == "{name}"' for name in totals)
    not_total = " and ".join(f'r._field != "{name}"' for name in totals)
    return f"""option task = {{name: "{TASK_NAME}", every: 1h, offset: 5m}}

data = from(bucket: "{settings.bucket}")
    |> range(start: -task.every)
    |> filter(fn: (r) => r._value is float or r._value is int)

data
    |> filter(fn: (r) => {not_total})
    |> aggregateWindow(every: 1h, fn: mean, createEmpty: false)
    |> to(bucket: "{settings.downsampled_bucket}")

data
    |> filter(fn: (r) => {is_total})
    |> aggregateWindow(every: 1h, fn: last, createEmpty: false)
    |> to(bucket: "{settings.downsampled_bucket}")
"""


@dataclass
class Report:
    """What one run changed: empty `changes` means InfluxDB already matched."""

    changes: list[str] = field(default_factory=list)
    tokens: dict[str, Path] = field(default_factory=dict)


Perm = tuple[str, str, str | None]  # (action, resource type, resource id)


class Provisioner:
    """One reconcile run against the InfluxDB at `settings.url`."""

    def __init__(self, settings: ProvisionSettings) -> None:
        from influxdb_client import InfluxDBClient  # type: ignore[attr-defined]

        self.settings = settings
        self.client = InfluxDBClient(url=settings.url, token=settings.admin_token, timeout=30_000)
        self.report = Report()

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def run(self) -> Report:
        """Reconcile everything; raises `ProvisionError` naming the step that failed."""
        from influxdb_client.rest import ApiException

        step = "organisation"
        try:
            org_id = self._org_id()
            step = "buckets"
            buckets = {
                name: self._bucket(org_id, name, retention)
                for name, retention in (
                    (self.settings.bucket, self.settings.retention_s),
                    (self.settings.downsampled_bucket, self.settings.downsampled_retention_s),
                    (self.settings.ha_bucket, self.settings.ha_retention_s),
                )
            }
            step = "downsampling task"
            self._task(org_id)
            step = "tokens"
            self._tokens(org_id, buckets)
            step = "replication"
            cloud = self.settings.cloud
            source = self.settings.bucket if cloud is not None and cloud.raw else self.settings.downsampled_bucket
            self._replication(org_id, buckets[source])
        except (ApiException, OSError, ValueError) as err:
            raise ProvisionError(f"{step} at {self.settings.url}: {err}") from err
        return self.report

    # -- steps ---------------------------------------------------------------------------

    def _org_id(self) -> str:
        orgs = self.client.organizations_api().find_organizations(org=self.settings.org)
        if not orgs:
            raise ValueError(f"organisation {self.settings.org!r} does not exist (first-boot setup not done?)")
        return str(orgs[0].id)

    def _bucket(self, org_id: str, name: str, retention_s: int) -> str:
        from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules

        api = self.client.buckets_api()
        rules = [BucketRetentionRules(type="expire", every_seconds=retention_s)]
        bucket = api.find_bucket_by_name(name)
        if bucket is None:
            bucket = api.create_bucket(bucket_name=name, org=org_id, retention_rules=rules, description=MANAGED)
            self.report.changes.append(f"created bucket {name}")
            return str(bucket.id)
        current = bucket.retention_rules[0].every_seconds if bucket.retention_rules else 0
        if int(current or 0) != retention_s:
            bucket.retention_rules = rules
            api.update_bucket(bucket)
            self.report.changes.append(f"retention of bucket {name}: {current} -> {retention_s} s")
        return str(bucket.id)

    def _task(self, org_id: str) -> None:
        from influxdb_client.domain.task_create_request import TaskCreateRequest
        from influxdb_client.domain.task_update_request import TaskUpdateRequest

        api = self.client.tasks_api()
        flux = downsample_flux(self.settings)
        tasks = api.find_tasks(name=TASK_NAME, org_id=org_id)
        if not tasks:
            api.create_task(
                task_create_request=TaskCreateRequest(org_id=org_id, flux=flux, status="active", description=MANAGED)
            )
            self.report.changes.append(f"created task {TASK_NAME}")
            return
        for extra in tasks[1:]:
            api.delete_task(extra.id)
            self.report.changes.append(f"deleted duplicate task {TASK_NAME}")
        task = tasks[0]
        if task.flux != flux or task.status != "active":
            api.update_task_request(task.id, TaskUpdateRequest(flux=flux, status="active", description=MANAGED))
            self.report.changes.append(f"updated task {TASK_NAME}")

    def _wanted_tokens(self, org_id: str, buckets: dict[str, str]) -> dict[str, set[Perm]]:
        s = self.settings
        return {
            "bridge": {
                ("write", "buckets", buckets[s.bucket]),
                ("read", "replications", None),
                ("read", "orgs", org_id),
            },
            "homeassistant": {("write", "buckets", buckets[s.ha_bucket]), ("read", "buckets", buckets[s.ha_bucket])},
            "dashboard": {("read", "buckets", buckets[name]) for name in (s.bucket, s.downsampled_bucket, s.ha_bucket)},
        }

    def _tokens(self, org_id: str, buckets: dict[str, str]) -> None:
        from influxdb_client.domain.permission import Permission
        from influxdb_client.domain.permission_resource import PermissionResource

        api = self.client.authorizations_api()
        existing = {a.description: a for a in api.find_authorizations(org_id=org_id) if a.description}
        for name, wanted in self._wanted_tokens(org_id, buckets).items():
            description = f"hems:{name}"
            path = token_path(self.settings.tokens_dir, name)
            current = existing.get(description)
            on_file = path.read_text().strip() if path.exists() else None
            if current is not None:
                have = {(p.action, p.resource.type, p.resource.id) for p in current.permissions or []}
                if have == wanted and on_file == current.token:
                    self.report.tokens[name] = path
                    continue
                api.delete_authorization(current.id)
            permissions = [
                Permission(action=action, resource=PermissionResource(type=rtype, id=rid, org_id=org_id))
                for action, rtype, rid in sorted(wanted, key=lambda p: (p[0], p[1], p[2] or ""))
            ]
            from influxdb_client.domain.authorization import Authorization

            created = api.create_authorization(
                authorization=Authorization(org_id=org_id, description=description, permissions=permissions)
            )
            write_token(path, str(created.token))
            self.report.tokens[name] = path
            self.report.changes.append(f"{'re-issued' if current is not None else 'created'} token {name}")

    def _replications_raw(self, org_id: str) -> list[dict[str, Any]]:
        from influxdb_client.service.replications_service import ReplicationsService

        response = ReplicationsService(self.client.api_client).get_replications(
            org_id=org_id, name=REPLICATION_NAME, _preload_content=False
        )
        body: dict[str, Any] = json.loads(response.data)
        return list(body.get("replications") or [])

    def _replication(self, org_id: str, local_bucket_id: str) -> None:
        from influxdb_client.service.remote_connections_service import RemoteConnectionsService
        from influxdb_client.service.replications_service import ReplicationsService

        remotes_api = RemoteConnectionsService(self.client.api_client)
        repl_api = ReplicationsService(self.client.api_client)
        remotes = [r for r in remotes_api.get_remote_connections(org_id=org_id).remotes or [] if r.name == REMOTE_NAME]
        replications = self._replications_raw(org_id)
        cloud = self.settings.cloud
        if cloud is None:
            for repl in replications:
                repl_api.delete_replication_by_id(repl["id"])
                self.report.changes.append(f"removed replication {REPLICATION_NAME}")
            for remote in remotes:
                remotes_api.delete_remote_connection_by_id(remote.id)
                self.report.changes.append(f"removed remote {REMOTE_NAME}")
            return
        remote_id = self._remote(remotes_api, org_id, remotes, cloud)
        self._stream(repl_api, org_id, local_bucket_id, remote_id, replications, cloud)

    def _remote(self, api: Any, org_id: str, remotes: list[Any], cloud: CloudTarget) -> str:
        from influxdb_client.domain.remote_connection_creation_request import RemoteConnectionCreationRequest
        from influxdb_client.domain.remote_connection_update_request import RemoteConnectionUpdateRequest

        description = f"{MANAGED}; token sha256:{cloud.fingerprint}"
        for extra in remotes[1:]:
            api.delete_remote_connection_by_id(extra.id)
        if not remotes:
            created = api.post_remote_connection(
                RemoteConnectionCreationRequest(
                    name=REMOTE_NAME,
                    description=description,
                    org_id=org_id,
                    remote_url=cloud.url,
                    remote_api_token=cloud.token,
                    remote_org_id=cloud.org_id,
                    allow_insecure_tls=False,
                )
            )
            self.report.changes.append(f"created remote {REMOTE_NAME}")
            return str(created.id)
        remote = remotes[0]
        if (remote.remote_url, remote.remote_org_id, remote.description) != (cloud.url, cloud.org_id, description):
            api.patch_remote_connection_by_id(
                remote.id,
                RemoteConnectionUpdateRequest(
                    description=description,
                    remote_url=cloud.url,
                    remote_api_token=cloud.token,
                    remote_org_id=cloud.org_id,
                    allow_insecure_tls=False,
                ),
            )
            self.report.changes.append(f"updated remote {REMOTE_NAME}")
        return str(remote.id)

    def _stream(
        self,
        api: Any,
        org_id: str,
        local_bucket_id: str,
        remote_id: str,
        replications: list[dict[str, Any]],
        cloud: CloudTarget,
    ) -> None:
        from influxdb_client.domain.replication_creation_request import ReplicationCreationRequest
        from influxdb_client.domain.replication_update_request import ReplicationUpdateRequest

        for extra in replications[1:]:
            api.delete_replication_by_id(extra["id"])
        if not replications:
            api.post_replication(
                ReplicationCreationRequest(
                    name=REPLICATION_NAME,
                    description=MANAGED,
                    org_id=org_id,
                    remote_id=remote_id,
                    local_bucket_id=local_bucket_id,
                    remote_bucket_name=cloud.bucket,
                    max_queue_size_bytes=cloud.max_queue_bytes,
                    max_age_seconds=cloud.max_age_s,
                    drop_non_retryable_data=False,
                )
            )
            self.report.changes.append(f"created replication {REPLICATION_NAME}")
            return
        repl = replications[0]
        # InfluxDB 2.7 answers with `RemoteBucketName` (capital R): accept both spellings
        remote_bucket = repl.get("remoteBucketName", repl.get("RemoteBucketName"))
        have = (repl.get("remoteID"), remote_bucket, repl.get("maxQueueSizeBytes"), repl.get("maxAgeSeconds"))
        if repl.get("localBucketID") != local_bucket_id:
            api.delete_replication_by_id(repl["id"])
            self.report.changes.append(f"removed replication {REPLICATION_NAME} of another bucket")
            self._stream(api, org_id, local_bucket_id, remote_id, [], cloud)
            return
        if have != (remote_id, cloud.bucket, cloud.max_queue_bytes, cloud.max_age_s):
            api.patch_replication_by_id(
                repl["id"],
                ReplicationUpdateRequest(
                    remote_id=remote_id,
                    remote_bucket_name=cloud.bucket,
                    max_queue_size_bytes=cloud.max_queue_bytes,
                    max_age_seconds=cloud.max_age_s,
                ),
            )
            self.report.changes.append(f"updated replication {REPLICATION_NAME}")


def provision(settings: ProvisionSettings) -> Report:
    """One reconcile run; raises `ProvisionError`."""
    provisioner = Provisioner(settings)
    try:
        return provisioner.run()
    finally:
        provisioner.close()
