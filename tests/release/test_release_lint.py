"""hadolint on every Dockerfile and shellcheck on every shell script of the repository; a rule
that is switched off carries its reason next to it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.release import REPO

BIN = Path(sys.executable).parent
SKIP_DIRS = {".git", ".venv", ".cache", "node_modules", ".demo", "__pycache__", ".mypy_cache", ".ruff_cache"}


def repo_files() -> list[Path]:
    """Every file of the working tree outside tool and cache folders."""
    found: list[Path] = []
    stack = [REPO]
    while stack:
        folder = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name not in SKIP_DIRS:
                    stack.append(entry)
            elif entry.is_file():
                found.append(entry)
    return sorted(found)


def is_shell_script(path: Path) -> bool:
    """A *.sh file, or any file whose shebang runs sh or bash."""
    if path.suffix == ".sh":
        return True
    try:
        first = path.open("rb").readline()
    except OSError:
        return False
    return bool(re.match(rb"#!\s*/(usr/)?bin/(env\s+)?(ba)?sh\b", first))


DOCKERFILES = [p for p in repo_files() if p.name == "Dockerfile" or p.name.startswith("Dockerfile.")]
SCRIPTS = [p for p in repo_files() if is_shell_script(p)]


def test_found_the_release_files() -> None:
    names = {p.relative_to(REPO).as_posix() for p in DOCKERFILES}
    assert {"nginx/Dockerfile", "services/mosquitto/Dockerfile", "services/meter-bridge/Dockerfile"} <= names
    assert REPO / "scripts" / "setup.sh" in SCRIPTS


def assert_clean(tool: str, *args: str) -> None:
    """Run a linter from the virtualenv; its findings are the failure message."""
    result = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint(dockerfile: Path) -> None:
    assert_clean("hadolint", "--no-color", str(dockerfile))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_hadolint_ignores_carry_a_reason(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#"), f"{dockerfile}:{number + 1}: say why above the ignore"
            assert "hadolint" not in previous, f"{dockerfile}:{number + 1}: say why above the ignore"
    assert not (REPO / ".hadolint.yaml").exists(), "no repository-wide ignores: ignore per line, with a reason"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck(script: Path) -> None:
    assert_clean("shellcheck", "--external-sources", str(script))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_shellcheck_disables_carry_a_reason(script: Path) -> None:
    for number, line in enumerate(script.read_text().splitlines(), 1):
        if "shellcheck disable=" in line:
            assert re.search(r"disable=[A-Z0-9,]+\s+#\s*\S", line), f"{script}:{number}: add `# reason`"
