"""services/meter-bridge/requirements.lock read with `packaging` (the library pip itself vendors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from .release import REPO

LOCK = REPO / "services" / "meter-bridge" / "requirements.lock"


@dataclass(frozen=True)
class Pin:
    """One locked requirement: `name==version ; marker` and its allowed file hashes."""

    requirement: Requirement
    hashes: frozenset[str]
    line: int

    @property
    def name(self) -> NormalizedName:
        """The canonical project name."""
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> Version | None:
        """The pinned version; None unless the specifier is exactly one `==`."""
        specs = list(self.requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            return None
        return Version(specs[0].version)


def read_lock(path: Path = LOCK) -> dict[NormalizedName, Pin]:
    """Every requirement of a pip requirements file with hashes (continuations joined, comments dropped)."""
    pins: dict[NormalizedName, Pin] = {}
    logical, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not logical:
            start = number
        if text.endswith("\\"):
            logical += text[:-1] + " "
            continue
        logical += text
        if logical.strip():
            words = logical.split()
            hashes = frozenset(w.removeprefix("--hash=") for w in words if w.startswith("--hash="))
            requirement = Requirement(" ".join(w for w in words if not w.startswith("--hash=")))
            pin = Pin(requirement, hashes, start)
            assert pin.name not in pins, f"{path.name}:{start}: {pin.name} twice"
            pins[pin.name] = pin
        logical = ""
    return pins
