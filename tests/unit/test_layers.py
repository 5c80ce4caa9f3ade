"""Imports point one way (STYLE.md): parsers and sources never import sinks; the model imports nothing of ours.

Data flows sources -> hub -> sinks. A source reaching into a sink (as the Shelly source once did
for HA topic helpers, now in `meterbridge.ha_topics`) couples the two ends of the pipe.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "meter-bridge" / "src" / "meterbridge"

#: Allowed exceptions, each with its reason.
EXCEPTIONS = {
    # the one-off `meter-bridge import green-button` command wires its own InfluxDB sink:
    # it is orchestration (like app.py), not the source's reading path
    ("sources/green_button/importer.py", "meterbridge.sinks"),
    ("sources/green_button/importer.py", "meterbridge.sinks.influx"),
}


def imports_of(path: Path) -> set[str]:
    """Absolute names of the meterbridge modules `path` imports (relative imports resolved)."""
    module = ".".join(("meterbridge", *path.relative_to(PACKAGE).with_suffix("").parts))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("meterbridge")}


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("sources"), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_sources_never_import_sinks_or_flex(path: Path) -> None:
    relative = path.relative_to(PACKAGE).as_posix()
    backwards = {
        name
        for name in imports_of(path)
        if name.startswith(("meterbridge.sinks", "meterbridge.flex", "meterbridge.app", "meterbridge.hub"))
        and (relative, name) not in EXCEPTIONS
    }
    assert not backwards, f"{relative} imports {sorted(backwards)}"


@pytest.mark.parametrize("name", ["model.py", "errors.py"])
def test_the_model_and_errors_import_nothing_of_ours(name: str) -> None:
    assert imports_of(PACKAGE / name) <= {"meterbridge.model", "meterbridge.errors"}


def test_the_checker_sees_relative_imports() -> None:
    # a guard that the test above could fail: the HA sink does import the topic helpers
    assert "meterbridge.ha_topics" in imports_of(PACKAGE / "sinks" / "homeassistant" / "discovery.py")
    assert "meterbridge.sinks" in imports_of(PACKAGE / "sources" / "green_button" / "importer.py")
