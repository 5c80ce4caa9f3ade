"""YAML loading that remembers where every key came from, with `${VAR}` substitution.

PyYAML's `compose` keeps each node's position; we build plain Python data from the
node tree ourselves so that each key path maps to its line. That is what lets
`check-config` print `FILE:LINE: key.path: reason` for every problem at once.

Substitution: in any string scalar, `${VAR}` is replaced by the environment variable
(an error when unset), `${VAR:-default}` by the variable or the default when it is
unset or empty, and `$$` by a literal `$`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: A path into the loaded data: mapping keys and list indices.
KeyPath = tuple[str | int, ...]

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found in a file: where it is and what is wrong."""

    line: int
    path: KeyPath
    reason: str


@dataclass(slots=True)
class LoadedYaml:
    """Plain data from a YAML document, the line of every key path, and load problems."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int:
        """The line of `path`, or of its nearest ancestor that has one (1 for the root)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


def format_path(path: KeyPath) -> str:
    """`("sources", 1, "id")` -> `sources[1].id`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}`, `${VAR:-default}` and `$$` in `text`.

    Returns the result and the names of variables that were unset with no default.
    """
    missing: list[str] = []

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if default is not None and not value:
            return default
        if value is None:
            missing.append(name)
            return ""
        return value

    return _VAR.sub(repl, text), missing


class _Builder:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.result = LoadedYaml(data=None)
        self._scalars = SafeConstructor()

    def build(self, node: Node, path: KeyPath) -> Any:
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.result.lines[(*path, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*path, index)))
            return items
        if not isinstance(node, ScalarNode):  # pragma: no cover - YAML has only three node kinds
            raise TypeError(type(node).__name__)
        return self._scalar(node, path)

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self._construct(key_node, (*path, "?")) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.result.problems.append(Problem(line, path, f"keys must be strings, not {key_node.tag}"))
                continue
            child = (*path, key)
            if key in out:
                first = self.result.lines[child]
                self.result.problems.append(Problem(line, child, f"duplicate key (first set on line {first})"))
                continue
            self.result.lines[child] = line
            out[key] = self.build(value_node, child)
        return out

    def _construct(self, node: ScalarNode, path: KeyPath) -> Any:
        try:
            return self._scalars.construct_object(node)
        except yaml.YAMLError as err:  # e.g. a bare `=` (the unsupported !!value tag)
            reason = getattr(err, "problem", None) or str(err)
            self.result.problems.append(Problem(node.start_mark.line + 1, path, f"YAML error: {reason}"))
            return None

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        value = self._construct(node, path)
        if node.tag != _STR_TAG or not isinstance(value, str):
            return value
        expanded, missing = substitute(value, self.env)
        for name in missing:
            reason = f"environment variable {name} is not set and has no default"
            self.result.problems.append(Problem(node.start_mark.line + 1, path, reason))
        return expanded


def load_yaml(text: str, env: Mapping[str, str]) -> LoadedYaml:
    """Parse one YAML document into plain data with line numbers and substitution.

    Syntax errors become a `Problem` (with `data` None) rather than an exception.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        return LoadedYaml(data=None, problems=[Problem(line, (), f"YAML syntax error: {err.problem}")])
    except yaml.YAMLError as err:
        return LoadedYaml(data=None, problems=[Problem(1, (), f"YAML error: {err}")])
    builder = _Builder(env)
    if root is not None:
        builder.result.lines[()] = root.start_mark.line + 1
        builder.result.data = builder.build(root, ())
    return builder.result
