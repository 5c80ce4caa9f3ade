"""Every Dockerfile of the release builds with balena's builder, which is Docker's classic builder,
not BuildKit (balena-engine builder/dockerfile/dispatchers.go: "the --chmod option requires
BuildKit"; the same flag parsing as moby's classic builder, moby/moby builder/dockerfile).

The classic builder parses each instruction's flags against a fixed list and fails the build on
any other (`--chmod`, `--mount`, `--link`...); it has no heredocs (the lines after `<<EOF` become
instructions of their own) and treats `# syntax=` as a comment, so a Dockerfile written for a
BuildKit frontend builds differently or not at all. hadolint accepts all of these."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.release import REPO
from release.test_release_lint import DOCKERFILES

# The flags the classic builder knows per instruction (balena-engine is moby 20.10's builder:
# FROM --platform, COPY --from/--chown, ADD --chown, HEALTHCHECK's four timings). Anything else,
# on these or other instructions, fails the build.
CLASSIC_FLAGS: dict[str, set[str]] = {
    "FROM": {"platform"},
    "COPY": {"from", "chown"},
    "ADD": {"chown"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "retries"},
}
# Parser directives only BuildKit reads (the classic builder knows `escape` alone).
BUILDKIT_DIRECTIVES = {"syntax", "check"}


def instructions(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction with continuations joined) for every instruction."""
    found: list[tuple[int, str]] = []
    current = ""
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by the parser
        if not current:
            start = number
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        found.append((start, current + stripped))
        current = ""
    if current:
        found.append((start, current))
    return found


def classic_builder_problems(text: str) -> list[str]:
    """Every line of `text` that balena's (classic) builder refuses or builds differently."""
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        directive = re.match(r"#\s*([a-zA-Z]+)\s*=", line)
        if not directive:
            break  # directives are only valid before the first other line
        if directive.group(1).lower() in BUILDKIT_DIRECTIVES:
            problems.append(f"line {number}: the `# {directive.group(1)}=` directive needs BuildKit")
    for number, instruction in instructions(text):
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        for token in rest.split():
            if not token.startswith("--"):
                break  # an instruction's flags come before its arguments
            flag = token[2:].split("=", 1)[0]
            if flag not in CLASSIC_FLAGS.get(keyword, set()):
                problems.append(f"line {number}: {keyword} --{flag} needs BuildKit")
        if keyword in {"RUN", "COPY", "ADD"} and re.search(r"(?<!<)<<-?\s*[\"']?[A-Za-z_]\w*[\"']?(\s|$)", rest):
            problems.append(f"line {number}: {keyword} with a heredoc needs BuildKit")
    return problems


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_release_dockerfiles_build_with_the_classic_builder(dockerfile: Path) -> None:
    assert classic_builder_problems(dockerfile.read_text()) == []


@pytest.mark.parametrize(
    ("dockerfile", "problem"),
    [
        ("FROM debian:12\nCOPY --chmod=0755 run.sh /run.sh\n", "COPY --chmod"),
        ("FROM debian:12\nADD --chmod=644 a /a\n", "ADD --chmod"),
        ("FROM debian:12\nCOPY --link a /a\n", "COPY --link"),
        ("FROM debian:12\nRUN --mount=type=cache,target=/root/.cache pip install x\n", "RUN --mount"),
        ("FROM debian:12\nRUN --network=none true\n", "RUN --network"),
        ("# syntax=docker/dockerfile:1\nFROM debian:12\n", "syntax"),
        ("FROM debian:12\nRUN <<EOF\necho hi\nEOF\n", "heredoc"),
        ("FROM debian:12\nCOPY <<EOF /etc/x\nhello\nEOF\n", "heredoc"),
        ("FROM debian:12\nRUN true && \\\n    true\nCOPY \\\n    --chmod=0755 a /a\n", "COPY --chmod"),
    ],
)
def test_the_check_refuses_buildkit_syntax(dockerfile: str, problem: str) -> None:
    problems = classic_builder_problems(dockerfile)
    assert any(problem in p for p in problems), problems


def test_the_check_accepts_what_the_classic_builder_builds() -> None:
    text = (
        "# escape=\\\n"
        "FROM --platform=linux/arm64 python:3.11.11-slim-bookworm AS build\n"
        "COPY --from=build --chown=bridge:bridge /wheels /wheels\n"
        "RUN pip install --no-cache-dir /wheels/*.whl \\\n"
        "    && useradd --system bridge\n"
        'HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 CMD ["true"]\n'
    )
    assert classic_builder_problems(text) == []
