"""What flex keeps across restarts: settings, events and asset states (one JSON file written
atomically, so a restart mid-event resumes), and the decision log (JSON lines, appended).

Pure file I/O: nothing here logs, counts or knows the broker. `FlexStore.load` returns None for
a missing file and raises `ValueError` for a damaged one; writes raise `OSError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .events import FlexEvent
from .policy import AssetState, Cause

#: Persisted-state format; bump on incompatible changes.
STATE_VERSION = 1


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(slots=True)
class AssetRecord:
    """The persisted part of an asset's state."""

    allowed: bool = True
    state: AssetState = AssetState.NORMAL
    cause: Cause | None = None
    changed_at: datetime | None = None
    shed_since: datetime | None = None
    used_in_event: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Persisted form."""
        return {
            "allowed": self.allowed,
            "state": self.state.value,
            "cause": None if self.cause is None else self.cause.value,
            "changed_at": _iso(self.changed_at),
            "shed_since": _iso(self.shed_since),
            "used_in_event": self.used_in_event,
        }

    def restore(self, record: AssetRecord) -> None:
        """Take over the persisted part of `record`."""
        self.allowed, self.state, self.cause = record.allowed, record.state, record.cause
        self.changed_at, self.shed_since = record.changed_at, record.shed_since
        self.used_in_event = record.used_in_event

    @staticmethod
    def from_json(data: dict[str, Any]) -> AssetRecord:
        """Inverse of `to_json`; raises `KeyError`/`ValueError`/`TypeError` on damaged data."""
        return AssetRecord(
            bool(data["allowed"]),
            AssetState(data["state"]),
            None if data["cause"] is None else Cause(data["cause"]),
            _time(data["changed_at"]),
            _time(data["shed_since"]),
            data["used_in_event"],
        )


@dataclass(slots=True)
class EventRecord:
    """An event flex knows of, and what it made of it."""

    event: FlexEvent
    accepted: bool
    baseline_w: float | None = None
    opted_out: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """Persisted form."""
        return {
            "event": self.event.to_json(),
            "accepted": self.accepted,
            "baseline_w": self.baseline_w,
            "opted_out": self.opted_out,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventRecord:
        """Inverse of `to_json`."""
        return cls(
            FlexEvent.from_json(data["event"]),
            bool(data["accepted"]),
            data["baseline_w"],
            bool(data["opted_out"]),
            str(data["reason"]),
        )


@dataclass(slots=True)
class FlexSettings:
    """What the householder sets in Home Assistant (persisted)."""

    participation: bool = True
    mode: str = "auto"
    import_limit_w: float | None = None


@dataclass(slots=True)
class SavedState:
    """Everything the state file holds."""

    settings: FlexSettings
    events: dict[str, EventRecord] = field(default_factory=dict)
    last_restore: datetime | None = None
    assets: dict[str, AssetRecord] = field(default_factory=dict)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` so a crash leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


class FlexStore:
    """The state file and the decision log of one flex controller."""

    def __init__(self, state_path: Path, log_path: Path) -> None:
        self.state_path = state_path
        self.log_path = log_path

    def load(self) -> SavedState | None:
        """The saved state; None when there is none. Raises `OSError` (unreadable) or `ValueError` (damaged)."""
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        try:
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            settings = data["settings"]
            return SavedState(
                FlexSettings(bool(settings["participation"]), str(settings["mode"]), settings["import_limit_w"]),
                {key: EventRecord.from_json(value) for key, value in data["events"].items()},
                _time(data["last_restore"]),
                {key: AssetRecord.from_json(value) for key, value in data["assets"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(repr(err)) from err

    def save(
        self,
        settings: FlexSettings,
        events: Mapping[str, EventRecord],
        last_restore: datetime | None,
        assets: Mapping[str, AssetRecord],
    ) -> None:
        """Replace the state file (atomically); raises `OSError`."""
        data = {
            "version": STATE_VERSION,
            "settings": {
                "participation": settings.participation,
                "mode": settings.mode,
                "import_limit_w": settings.import_limit_w,
            },
            "events": {key: record.to_json() for key, record in events.items()},
            "last_restore": _iso(last_restore),
            "assets": {asset_id: asset.to_json() for asset_id, asset in assets.items()},
        }
        write_atomically(self.state_path, json.dumps(data, indent=1))

    def append(self, entry: dict[str, Any]) -> None:
        """Append one decision to the log; raises `OSError`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry, default=str) + "\n")
