"""Figures of the reliability tests: mode (fast in `make test`, full in `make reliability`) and
a JSON file of measured figures next to their goals, rendered into docs/reliability.md by
`scripts/reliability_report.py`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: `HEMS_RELIABILITY=full` runs the long versions (`make reliability`); anything else the fast ones.
FULL = os.environ.get("HEMS_RELIABILITY", "") == "full"
MODE = "full" if FULL else "fast"
FIGURES_DIR = REPO / ".cache" / "reliability"


def scale(fast: Any, full: Any) -> Any:
    """`full` in the long run, `fast` otherwise."""
    return full if FULL else fast


def figures_file(mode: str = MODE) -> Path:
    """Where the figures of `mode` are written."""
    return FIGURES_DIR / f"figures-{mode}.json"


def record(key: str, *, area: str, check: str, goal: str, measured: str, ok: bool, test: str, **extra: Any) -> None:
    """Store one figure (read-modify-write: tests run one at a time in one process)."""
    path = figures_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data[key] = {
        "area": area,
        "check": check,
        "goal": goal,
        "measured": measured,
        "ok": ok,
        "test": test,
        "mode": MODE,
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)
