"""Imports point one way (STYLE.md), checked on the import graph of every module of `meterbridge`.

The graph is built from the AST (nothing is imported): an edge for each `import` of one of our
modules, plus the packages Python initialises on the way (`import a.b.c` runs `a.b/__init__` too,
unless the importer is itself inside `a.b`). Edges are *load-time* (module level, including
`if TYPE_CHECKING:` blocks: a type is a dependency too) or *deferred* (inside a function).

Rules:
- no circle at all, deferred edges included;
- every module sits on one layer of the floor order below, and a load-time import never
  points to a higher layer. Deferred imports may point up: that is how the family table
  (schema) reaches a family's transport only when the family is configured;
- sources never import sinks or flex (data flows sources -> hub -> sinks), and the model and
  errors import nothing of ours.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "meter-bridge" / "src" / "meterbridge"

#: The floor order, lowest first: a module may import (at load time) only from its own layer or below.
LAYERS = ("foundation", "pure", "contracts", "schema", "transport", "components", "application")

#: Which layer a module is on: the first pattern that matches its dotted name wins.
PLACEMENT: tuple[tuple[str, str], ...] = (
    # application: wires everything, reads whole configs, runs commands
    ("meterbridge.app", "application"),
    ("meterbridge.cli", "application"),
    ("meterbridge.watch", "application"),
    ("meterbridge.senselink", "application"),  # `meter-bridge import senselink`
    ("meterbridge.sources.registry", "application"),
    ("meterbridge.sources.shelly.provision", "application"),  # `meter-bridge shelly provision`
    # schema: config models (the whole file's and each family's), the family table, the reference
    ("meterbridge.sources.*.config", "schema"),
    ("meterbridge.sources.*_config", "schema"),
    ("meterbridge.flex.config", "schema"),
    ("meterbridge.flex.assets", "schema"),
    ("meterbridge.sinks.kasa.config", "schema"),
    ("meterbridge.families", "schema"),
    ("meterbridge.discovery", "schema"),  # what is found by default: a table like families, sources built lazily
    ("meterbridge.config", "schema"),
    ("meterbridge.docs", "schema"),
    # pure: parsers and wire formats, no I/O (fuzzed and unit-tested without a peer)
    ("meterbridge.sources.*.parser", "pure"),
    ("meterbridge.sources.green_button.espi", "pure"),
    ("meterbridge.sources.jsonpayload", "pure"),
    ("meterbridge.sources.totals", "pure"),
    ("meterbridge.sinks.kasa.protocol", "pure"),
    ("meterbridge.sinks.influx.lineprotocol", "pure"),
    ("meterbridge.flex.policy", "pure"),
    ("meterbridge.flex.events", "pure"),
    ("meterbridge.flex.baseline", "pure"),
    ("meterbridge.flex.settlement", "pure"),
    # contracts: what a source and a sink are
    ("meterbridge.sources", "contracts"),
    ("meterbridge.sinks", "contracts"),
    # transport: talking to the broker and to Home Assistant's HTTP API
    ("meterbridge.mqtt", "transport"),
    ("meterbridge.mqttsession", "transport"),
    ("meterbridge.statistics", "transport"),
    ("meterbridge.usbserial", "transport"),  # finds a serial device by its USB ids in sysfs
    # components: the families' sources, the sinks, flex, the hub and the health endpoint
    ("meterbridge.sources.*", "components"),
    ("meterbridge.sinks.*", "components"),
    ("meterbridge.flex", "components"),
    ("meterbridge.flex.*", "components"),
    ("meterbridge.hub", "components"),
    ("meterbridge.roles", "components"),  # a sink: meters' roles, their HA entities and the store
    ("meterbridge.health", "components"),
    ("meterbridge.influx_provision", "components"),
    # foundation: the model, errors and small shared helpers
    ("meterbridge", "foundation"),
    ("meterbridge.model", "foundation"),
    ("meterbridge.errors", "foundation"),
    ("meterbridge.backoff", "foundation"),
    ("meterbridge.asyncutil", "foundation"),
    ("meterbridge.logutil", "foundation"),
    ("meterbridge.stats", "foundation"),
    ("meterbridge.configbase", "foundation"),
    ("meterbridge.sections", "foundation"),
    ("meterbridge.yamlsource", "foundation"),
    ("meterbridge.ha_topics", "foundation"),
    ("meterbridge.ha_entities", "foundation"),
    ("meterbridge.clocksync", "foundation"),  # the kernel's NTP status: one read-only call, like time.time
)

#: Allowed exceptions to "sources never import sinks", each with its reason.
EXCEPTIONS = {
    # `meter-bridge import green-button` hands historical readings to the `Sink`s it is given
    # (the contract only; which sinks is decided in app.py)
    ("sources/green_button/importer.py", "meterbridge.sinks"),
}


@dataclass
class ImportGraph:
    """Our modules and who imports whom: `load[m]` at load time, `deferred[m]` inside functions."""

    modules: dict[str, Path]
    load: dict[str, set[str]] = field(default_factory=dict)
    deferred: dict[str, set[str]] = field(default_factory=dict)

    def edges(self) -> dict[str, set[str]]:
        """Every edge, load-time and deferred."""
        return {m: self.load.get(m, set()) | self.deferred.get(m, set()) for m in self.modules}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: Iterable[str]) -> set[str]:
    known = set(known)
    package = importer if is_package else importer.rpartition(".")[0]
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        # `from pkg import name`: `name` may be a submodule
        names = {target} | {f"{target}.{alias.name}" for alias in node.names}
    found: set[str] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages Python initialises on the way
            prefix = ".".join(parts[:i])
            if prefix in known and not (importer == prefix or importer.startswith(prefix + ".")):
                found.add(prefix)
    return found - {importer}


def _visit(node: ast.AST, graph: ImportGraph, name: str, is_package: bool, in_function: bool) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            targets = _targets(child, name, is_package, graph.modules)
            (graph.deferred if in_function else graph.load)[name].update(targets)
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        _visit(child, graph, name, is_package, inner)


def build_graph(root: Path = PACKAGE) -> ImportGraph:
    """The import graph of the package at `root`, from the source text alone."""
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = ImportGraph(modules)
    for name, path in modules.items():
        graph.load[name], graph.deferred[name] = set(), set()
        _visit(ast.parse(path.read_text()), graph, name, path.name == "__init__.py", in_function=False)
    return graph


def find_circle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One circle in `edges` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := walk(start)) is not None:
            return found
    return None


def layer_of(module: str) -> str | None:
    """The module's layer; a package whose `__init__` imports nothing of ours runs nothing: foundation."""
    path = GRAPH.modules.get(module)
    if path is not None and path.name == "__init__.py" and not GRAPH.load[module] and not GRAPH.deferred[module]:
        return "foundation"
    for pattern, layer in PLACEMENT:
        if fnmatch.fnmatchcase(module, pattern):
            return layer
    return None


GRAPH = build_graph()


def test_there_is_no_import_circle() -> None:
    circle = find_circle(GRAPH.edges())
    assert circle is None, "import circle: " + " -> ".join(circle or [])


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in GRAPH.modules if layer_of(m) is None)
    assert not unplaced, f"add these to PLACEMENT in {Path(__file__).name}: {unplaced}"


@pytest.mark.parametrize("module", sorted(GRAPH.modules))
def test_load_time_imports_never_point_up(module: str) -> None:
    own = LAYERS.index(layer_of(module) or "application")
    upward = sorted(
        f"{target} ({layer_of(target)})"
        for target in GRAPH.load[module]
        if LAYERS.index(layer_of(target) or "application") > own
    )
    assert not upward, f"{module} ({LAYERS[own]}) imports from higher layers: {upward}"


def test_the_schema_loads_without_transports_or_sources() -> None:
    """Importing the schema pulls in no transport (aiomqtt, aiohttp) and no source or sink code."""
    seen: set[str] = set()
    todo = ["meterbridge.config"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(GRAPH.load[module])
    too_high = sorted(m for m in seen if LAYERS.index(layer_of(m) or "application") > LAYERS.index("schema"))
    assert not too_high, too_high


def imports_of(path: Path) -> set[str]:
    """The meterbridge modules `path` imports, load-time or deferred."""
    name = module_name(path)
    return GRAPH.load[name] | GRAPH.deferred[name]


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("sources"), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_sources_never_import_sinks_or_flex(path: Path) -> None:
    relative = path.relative_to(PACKAGE).as_posix()
    if layer_of(module_name(path)) == "application":
        return  # commands living beside their family (provision, registry) wire what they need
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


# -- the checker itself: each rule above can fail ----------------------------------------------


def test_the_checker_sees_relative_imports() -> None:
    # the HA sink does import the topic helpers
    assert "meterbridge.ha_topics" in imports_of(PACKAGE / "sinks" / "homeassistant" / "discovery.py")
    assert "meterbridge.sinks" in imports_of(PACKAGE / "sources" / "green_button" / "importer.py")


def test_the_checker_finds_circles_layers_and_deferred_imports(tmp_path: Path) -> None:
    package = tmp_path / "meterbridge"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("from .sub import thing\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "thing.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..app import X\n"
    )
    (package / "app.py").write_text("def run():\n    from .model import Y\n")
    graph = build_graph(package)
    assert graph.load["meterbridge.model"] == {"meterbridge.sub", "meterbridge.sub.thing"}
    assert graph.load["meterbridge.sub.thing"] == {"meterbridge.app"}  # TYPE_CHECKING counts
    assert graph.deferred["meterbridge.app"] == {"meterbridge.model"}
    assert graph.load["meterbridge.app"] == set()
    circle = find_circle(graph.edges())
    assert circle is not None
    assert circle[0] == circle[-1]
    assert "meterbridge.app" in circle
    assert layer_of("meterbridge.model") == "foundation"
    assert layer_of("meterbridge.sources.glow.config") == "schema"
    assert layer_of("meterbridge.sources.glow.source") == "components"
    assert layer_of("meterbridge.sources.registry") == "application"


def test_no_module_uses_an_mqtt_library() -> None:
    """The bridge talks MQTT only through its own transport (`meterbridge.mqtt`, issue 19): no
    module imports aiomqtt or paho (neither is a runtime dependency) or catches their errors."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] in ("aiomqtt", "paho")]
    assert not offenders, offenders
