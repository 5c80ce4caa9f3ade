"""The commands the docs tell an operator to run, checked against the tools' own command lists.

Two halves, both pure:

- `doc_commands` finds every invocation of a tool in a Markdown file: in shell code blocks
  (```sh, ```bash, ```shell, ```console and unlabelled ones) at every command position (line
  start, after `|`, `&&`, `;`, `$(`, `do`, environment assignments, and inside the value of a
  `name='...'` assignment), and in inline code spans that start with the tool. `<placeholder>`s
  become one word.
- `check` parses one invocation the way the tool's parser would, against a `CommandTable` built
  from the tool's own description of itself: balena-cli's `oclif.manifest.json` (`balena_table`),
  an `argparse` parser (`argparse_table`) or a `--help` usage synopsis (`usage_table`). It reports
  an unknown command, an unknown flag, a flag that takes a value without one (or a boolean given
  one) and more positional arguments than the command takes. A missing required argument is not
  reported: prose names commands without their arguments ("`balena device ssh` runs ...").

Hand-written because no library parses commands out of prose and then parses them as oclif and
argparse would; both parsers' rules used here are the ones their docs state (oclif: `--flag value`,
`--flag=value`, `-c value`, `-cvalue`, `--no-flag` only where `allowNo`, `--` ends the flags;
argparse: the same without `allowNo`). Flag abbreviations argparse would accept are reported:
docs spell flags out.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHELL_LANGUAGES = frozenset({"", "sh", "bash", "shell", "console"})
# Tokens after which a new command starts.
_COMMAND_STARTS = frozenset({"|", "||", "&&", ";", "&", "(", ")", "$", "do", "then", "else", "!", "{", "}"})
_REDIRECTIONS = frozenset({">", ">>", "<", "<<", ">&", "<&", "&>"})
_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its words, every spelling of its flags (-> takes a value), its positional limit."""

    words: tuple[str, ...]
    flags: Mapping[str, bool]
    #: None: any number (oclif `strict: false`, argparse `*`/`+`)
    max_positionals: int | None
    #: only a group of subcommands (argparse subparsers), not a command itself
    group: bool = False


@dataclass(frozen=True, slots=True)
class CommandTable:
    """A tool's commands, keyed by their words (`("env", "set")`)."""

    tool: str
    source: str
    commands: Mapping[tuple[str, ...], CommandSpec]


@dataclass(frozen=True, slots=True)
class DocCommand:
    """An invocation found in a doc: where it is and its words after the tool's name."""

    path: str
    line: int
    argv: tuple[str, ...]
    text: str = field(compare=False)

    def where(self) -> str:
        return f"{self.path}:{self.line}: `{self.text}`"


# --- tables ------------------------------------------------------------------------------------


def balena_table(manifest: Mapping[str, Any], source: str) -> CommandTable:
    """balena-cli's commands from its `oclif.manifest.json` (ids `env:set`, topic separator a space)."""
    commands: dict[tuple[str, ...], CommandSpec] = {}
    for command_id, command in manifest["commands"].items():
        flags: dict[str, bool] = {"--help": False}  # oclif's own, on every command
        for name, flag in command["flags"].items():
            takes_value = flag["type"] == "option"
            flags[f"--{name}"] = takes_value
            for alias in flag.get("aliases") or ():
                flags[f"--{alias}"] = takes_value
            for char in [flag.get("char"), *(flag.get("charAliases") or ())]:
                if char:
                    flags[f"-{char}"] = takes_value
            if flag.get("allowNo"):
                flags[f"--no-{name}"] = False
        limit = None if command.get("strict") is False else len(command.get("args") or {})
        for spelling in [command_id, *(command.get("aliases") or ()), *(command.get("hiddenAliases") or ())]:
            words = tuple(spelling.split(":"))
            commands[words] = CommandSpec(words, flags, limit)
    return CommandTable("balena", source, commands)


def argparse_table(parser: argparse.ArgumentParser, tool: str, source: str) -> CommandTable:
    """An argparse program's commands: every parser reachable through its subparsers."""
    commands: dict[tuple[str, ...], CommandSpec] = {}

    def walk(words: tuple[str, ...], current: argparse.ArgumentParser) -> None:
        flags: dict[str, bool] = {}
        limit: int | None = 0
        group = False
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                group = True
                for name, sub in action.choices.items():
                    walk((*words, name), sub)
            elif action.option_strings:
                for spelling in action.option_strings:
                    flags[spelling] = action.nargs != 0
            elif limit is not None:
                if action.nargs in ("*", "+", argparse.REMAINDER):
                    limit = None
                else:
                    limit += action.nargs if isinstance(action.nargs, int) else 1
        commands[words] = CommandSpec(words, flags, limit, group)

    walk((), parser)
    return CommandTable(tool, source, commands)


_SYNOPSIS_FLAG = re.compile(r"(?<![\w-])(-{1,2}[A-Za-z][\w-]*)(?: ([A-Za-z][\w-]*))?")


def usage_table(help_text: str, tool: str, source: str) -> CommandTable:
    """A command without subcommands from its `--help` usage synopsis (`[-t topic] [-v] ...`): a flag
    followed by a word takes a value. Mosquitto's clients print one, e.g. `mosquitto_sub --help`."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Usage:"))
    synopsis = []
    for line in lines[start:]:
        if synopsis and not line.strip():
            break
        synopsis.append(line)
    flags: dict[str, bool] = {}
    for match in _SYNOPSIS_FLAG.finditer(" ".join(synopsis)):
        flags[match.group(1)] = flags.get(match.group(1), False) or match.group(2) is not None
    return CommandTable(tool, source, {(): CommandSpec((), flags, 0)})


# --- finding invocations -----------------------------------------------------------------------


def _tokens(text: str, where: str = "") -> list[str]:
    """Shell words and operators of one command line, `<placeholder>`s made one word."""
    lexer = shlex.shlex(_PLACEHOLDER.sub("PLACEHOLDER", text), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError as err:
        raise ValueError(f"{where}: `{text}` is not a shell command line: {err}") from err


def _invocations(tokens: list[str], tool: str) -> Iterator[tuple[str, ...]]:
    """The argument lists of `tool` at command positions in one shell command line."""
    at_start = True
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _COMMAND_STARTS:
            at_start = True
        elif at_start and _ASSIGNMENT.match(token):
            # VAR=value cmd: still at the command position; a quoted value may be a command itself
            value = token.split("=", 1)[1]
            if " " in value:
                yield from _invocations(_tokens(value), tool)
        elif at_start and token == tool:
            end = i + 1
            while end < len(tokens) and tokens[end] not in _COMMAND_STARTS:
                end += 1
            argv: list[str] = []
            j = i + 1
            while j < end:
                if tokens[j] in _REDIRECTIONS:
                    j += 2  # the redirection and its target
                    continue
                # a usage synopsis's optional parts, `[--meter ID]`, are the words inside
                argv.append(
                    tokens[j].lstrip("[").rstrip("]") if tokens[j][:1] == "[" or tokens[j][-1:] == "]" else tokens[j]
                )
                j += 1
            yield tuple(argv)
            at_start = False
            i = end
            continue
        else:
            at_start = False
        i += 1


def doc_commands(path: str, text: str, tool: str) -> list[DocCommand]:
    """Every invocation of `tool` in the Markdown `text` of `path`, in order."""
    found: list[DocCommand] = []

    def mentions(command: str) -> bool:
        return re.search(rf"(^|[\s|;&(='\"]){re.escape(tool)}(\s|$)", command) is not None

    lines = text.split("\n")
    prose: list[str] = []
    fence: str | None = None
    language = ""
    pending = ""
    pending_line = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence, language = stripped[:3], stripped[3:].strip().lower()
            prose.append("")
            continue
        if fence is not None:
            prose.append("")
            if stripped.startswith(fence):
                fence = None
                continue
            if language not in SHELL_LANGUAGES:
                continue
            if not pending:
                pending_line = number
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            command = (pending + stripped).removeprefix("$ ")
            pending = ""
            if mentions(command):
                for argv in _invocations(_tokens(command, f"{path}:{pending_line}"), tool):
                    found.append(DocCommand(path, pending_line, argv, command))
            continue
        prose.append(line)
    body = "\n".join(prose)
    for match in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", body, re.S):
        span = " ".join(match.group(2).split())
        if not re.match(rf"([A-Za-z_][A-Za-z0-9_]*=\S*\s+)*{re.escape(tool)}(\s|$)", span):
            continue  # inline code that is not a command of the tool
        number = body.count("\n", 0, match.start()) + 1
        tokens = _tokens(span, f"{path}:{number}")
        # the tool's name alone in prose is a mention (`meter-bridge` is also a container's name)
        found.extend(DocCommand(path, number, argv, span) for argv in _invocations(tokens, tool) if argv)
    return sorted(found, key=lambda command: command.line)


def markdown_files(repo: Path) -> list[Path]:
    """The docs an operator reads: README.md and every Markdown file under docs/."""
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


# --- checking ----------------------------------------------------------------------------------


def resolve(argv: tuple[str, ...], table: CommandTable) -> tuple[CommandSpec | None, int]:
    """The command `argv` names (the longest run of leading words that is one) and its word count."""
    words = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token)
    for count in range(len(words), -1, -1):
        spec = table.commands.get(tuple(words[:count]))
        if spec is not None:
            return spec, count
    return None, 0


def _unknown_words(argv: tuple[str, ...], table: CommandTable) -> tuple[str, ...]:
    """The words that name no command: the longest topic (prefix of some command) and the next word."""
    words = tuple(token for token in argv if not token.startswith("-"))
    known = 0
    while known < len(words) and any(spec[: known + 1] == words[: known + 1] for spec in table.commands):
        known += 1
    return words[: known + 1]


def check(command: DocCommand, table: CommandTable) -> list[str]:
    """What `table`'s tool would refuse in `command`, each naming the doc's file and line."""
    spec, count = resolve(command.argv, table)
    where = command.where()
    if spec is None:
        unknown = " ".join((table.tool, *_unknown_words(command.argv, table)))
        return [f"{where}: `{unknown}` is not a command of {table.source}"]
    problems: list[str] = []
    positionals: list[str] = []
    rest = list(command.argv[count:])
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if token == "--":
            positionals.extend(rest[i:])
            break
        if token.startswith("--"):
            name, equals, _ = token.partition("=")
            if name not in spec.flags:
                problems.append(f"{where}: `{table.tool} {' '.join(spec.words)}` has no flag {name} in {table.source}")
            elif spec.flags[name] and not equals:
                if i >= len(rest):
                    problems.append(f"{where}: {name} needs a value")
                i += 1
            elif not spec.flags[name] and equals:
                problems.append(f"{where}: {name} takes no value")
        elif token.startswith("-") and len(token) > 1 and not token[1:].replace(".", "").isdigit():
            name = token[:2]
            if name not in spec.flags:
                problems.append(f"{where}: `{table.tool} {' '.join(spec.words)}` has no flag {name} in {table.source}")
            elif spec.flags[name] and len(token) == 2:
                if i >= len(rest):
                    problems.append(f"{where}: {name} needs a value")
                i += 1
            elif not spec.flags[name] and len(token) > 2:
                problems.append(f"{where}: {token} is not a flag of `{table.tool} {' '.join(spec.words)}`")
        else:
            positionals.append(token)
    if spec.group and positionals:
        return [f"{where}: `{' '.join((table.tool, *spec.words, positionals[0]))}` is not a command of {table.source}"]
    if problems:
        return problems  # after an unknown flag, which words are its values is anyone's guess
    if spec.max_positionals is not None and len(positionals) > spec.max_positionals:
        problems.append(
            f"{where}: `{table.tool} {' '.join(spec.words)}` takes at most {spec.max_positionals} "
            f"argument(s) in {table.source}, given {len(positionals)}: {positionals}"
        )
    return problems
