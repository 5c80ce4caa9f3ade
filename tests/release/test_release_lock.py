"""One lock for the bridge's runtime dependencies: services/meter-bridge/requirements.lock
(`make lock`, scripts/lock.sh) agrees with pyproject.toml, has a CPython 3.11 wheel with a locked
hash for every pin on aarch64 (Raspberry Pi 4) and x86_64, and is what the image and `make setup`
install (hashes required, wheels only, the bridge itself without dependencies).

The dependency graph is read from the packages' own metadata as installed in this virtualenv
(`make setup` installs the lock there); the wheels are the ones pip fetched for each platform
(scripts/lock-wheels.sh, run by `make setup-containers`, which `make test` runs), hashes required."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename

from helpers.lock import LOCK, Pin, read_lock
from helpers.release import REPO

PYPROJECT = REPO / "services" / "meter-bridge" / "pyproject.toml"
MACHINES = ("aarch64", "x86_64")
#: python:3.11-slim-bookworm's glibc (and balenaOS's images on a Pi 4 run that image)
GLIBC_MINOR = 36


def target_environment(machine: str, extra: str = "") -> dict[str, str]:
    """PEP 508 marker variables of CPython 3.11 on Linux `machine` (what the image runs)."""
    env: dict[str, str] = dict(default_environment())
    env.update(
        implementation_name="cpython", platform_python_implementation="CPython", python_version="3.11",
        python_full_version="3.11.11", sys_platform="linux", platform_system="Linux", os_name="posix",
        platform_machine=machine, extra=extra,
    )  # fmt: skip
    return env


def applies(requirement: Requirement, extras: Iterable[str] = ("",)) -> bool:
    """Whether `requirement` is needed on any target machine, with any of `extras` requested."""
    marker = requirement.marker
    return marker is None or any(
        marker.evaluate(target_environment(machine, extra)) for machine in MACHINES for extra in extras
    )


def installed_requires(name: str) -> list[str]:
    """`Requires-Dist` of the installed distribution `name`."""
    return importlib.metadata.requires(name) or []


def lock_problems(
    dependencies: list[str], pins: dict[NormalizedName, Pin], requires: Callable[[str], list[str]]
) -> list[str]:
    """Every way the lock disagrees with the project's `dependencies` and with what each pinned
    package requires (walked from the project's own dependencies, extras included)."""
    problems = [
        f"line {pin.line}: {pin.requirement} is not one exact version" for pin in pins.values() if pin.version is None
    ]
    problems += [f"line {pin.line}: {pin.name} has no hashes" for pin in pins.values() if not pin.hashes]
    todo = [(Requirement(dependency), "pyproject.toml") for dependency in dependencies]
    reached: set[NormalizedName] = set()
    while todo:
        requirement, wanted_by = todo.pop()
        name = canonicalize_name(requirement.name)
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{requirement} (from {wanted_by}) is not in the lock")
            continue
        if pin.version is not None and not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{name}=={pin.version} is outside {wanted_by}'s {requirement}")
        extras = ("", *requirement.extras)
        for text in requires(name) if name not in reached or requirement.extras else ():
            needed = Requirement(text)
            if applies(needed, extras):
                todo.append((needed, f"{name}"))
        reached.add(name)
    problems += [
        f"line {pin.line}: {pin.name} is locked but nothing requires it"
        for pin in pins.values()
        if pin.name not in reached
    ]
    return problems


def supported_tags(machine: str) -> set[Tag]:
    """The wheel tags CPython 3.11 accepts on manylinux (glibc up to 2.GLIBC_MINOR) `machine`."""
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)] + [
        f"manylinux2014_{machine}"
    ]
    return set(cpython_tags((3, 11), abis=["cp311"], platforms=platforms)) | set(
        compatible_tags((3, 11), interpreter="cp311", platforms=platforms)
    )


def wheel_problems(pins: dict[NormalizedName, Pin], wheels: Path, machine: str) -> list[str]:
    """Every pin needed on `machine` without a wheel in `wheels` that CPython 3.11 there installs
    and whose sha256 the lock lists."""
    tags = supported_tags(machine)
    found: dict[NormalizedName, list[Path]] = {}
    for path in wheels.glob("*.whl"):
        name, version, _, wheel_tags = parse_wheel_filename(path.name)
        if name in pins and version == pins[name].version and wheel_tags & tags:
            found.setdefault(name, []).append(path)
    problems = []
    for pin in pins.values():
        marker = pin.requirement.marker
        if marker is not None and not marker.evaluate(target_environment(machine)):
            continue
        digests = {"sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() for path in found.get(pin.name, [])}
        if not digests:
            problems.append(f"{pin.name}=={pin.version}: no cp311 wheel for {machine}")
        elif not digests & pin.hashes:
            problems.append(f"{pin.name}=={pin.version}: the {machine} wheel's hash is not in the lock")
    return problems


def project_dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """[project].dependencies of the bridge's pyproject.toml."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert isinstance(dependencies, list)
    return [str(d) for d in dependencies]


def test_the_lock_agrees_with_pyproject() -> None:
    pins = read_lock()
    for pin in pins.values():  # the metadata walked below is the locked version's
        if applies(pin.requirement):
            assert importlib.metadata.version(pin.name) == str(pin.version), (
                f"{pin.name}: `make setup` installs the lock"
            )
    assert lock_problems(project_dependencies(), pins, installed_requires) == []


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


NO_DEPS: dict[str, list[str]] = {"a": [], "b": [], "c": []}
A_NEEDS = {"a": ["b>=1", 'c>=2; extra == "x"', 'winonly; sys_platform == "win32"'], "b": [], "c": []}


@pytest.mark.parametrize(
    ("dependencies", "lock", "metadata", "problem"),
    [
        (["a>=1,<2"], "", NO_DEPS, "a<2,>=1 (from pyproject.toml) is not in the lock"),
        (["a>=1,<2"], "a==2.0 --hash=sha256:00\n", NO_DEPS, "a==2.0 is outside pyproject.toml's a<2,>=1"),
        (["a>=1"], "a>=1.0 --hash=sha256:00\n", NO_DEPS, "line 1: a>=1.0 is not one exact version"),
        (["a>=1"], "a==1.0\n", NO_DEPS, "line 1: a has no hashes"),
        (["a>=1"], "a==1.0 --hash=sha256:00\nb==1 \\\n    --hash=sha256:01\n", NO_DEPS,
         "line 2: b is locked but nothing requires it"),
        (["a>=1"], "a==1.0 --hash=sha256:00\n", A_NEEDS, "b>=1 (from a) is not in the lock"),
        (["a[x]>=1"], "a==1.0 --hash=sha256:00\nb==1 --hash=sha256:01\n", A_NEEDS,
         'c>=2; extra == "x" (from a) is not in the lock'),
        (["a>=1"], "a==1.0 --hash=sha256:00\nb==0.9 --hash=sha256:01\n", A_NEEDS, "b==0.9 is outside a's b>=1"),
    ],
)  # fmt: skip
def test_the_check_finds_each_disagreement(
    tmp_path: Path, dependencies: list[str], lock: str, metadata: dict[str, list[str]], problem: str
) -> None:
    """A lock that misses a dependency, pins outside a range, pins loosely, lacks hashes, keeps a
    package nothing needs, or misses what a dependency or a requested extra needs."""
    pins = read_lock(write(tmp_path / "requirements.lock", lock))
    assert problem in lock_problems(dependencies, pins, lambda name: metadata[name])


def test_the_check_accepts_a_consistent_lock(tmp_path: Path) -> None:
    lock = (
        "a==1.0 \\\n    --hash=sha256:00\n    # via pyproject\n"
        "b==1.5 ; python_version >= '3.8' \\\n    --hash=sha256:01\n"
    )
    pins = read_lock(write(tmp_path / "requirements.lock", lock))
    metadata = {"a": ["b>=1", 'winonly; sys_platform == "win32"'], "b": []}
    assert lock_problems(["a>=1,<2"], pins, lambda name: metadata[name]) == []


@pytest.mark.parametrize("machine", MACHINES)
def test_every_pin_has_a_cp311_wheel_with_a_locked_hash(machine: str) -> None:
    wheels = REPO / ".cache" / "lock-wheels" / machine
    stamp = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    fetched = (wheels / ".stamp").read_text().strip() if (wheels / ".stamp").is_file() else None
    assert fetched == stamp, (
        f"no wheels fetched for this lock in {wheels}: `make setup-containers` (scripts/lock-wheels.sh) does"
    )
    assert wheel_problems(read_lock(), wheels, machine) == []


def test_the_wheel_check_finds_a_missing_or_foreign_wheel(tmp_path: Path) -> None:
    content = b"wheel bytes"
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    lock = f"a==1.0 --hash={digest}\nb==2.0 --hash=sha256:00\nc==3.0 --hash={digest}\n"
    pins = read_lock(write(tmp_path / "requirements.lock", lock))
    (tmp_path / "a-1.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl").write_bytes(content)
    (tmp_path / "b-2.0-py3-none-any.whl").write_bytes(content)  # a hash the lock does not list
    (tmp_path / "c-3.0-cp312-cp312-manylinux_2_17_aarch64.whl").write_bytes(content)  # another Python
    assert wheel_problems(pins, tmp_path, "aarch64") == [
        "b==2.0: the aarch64 wheel's hash is not in the lock",
        "c==3.0: no cp311 wheel for aarch64",
    ]
    assert "a==1.0: no cp311 wheel for x86_64" in wheel_problems(pins, tmp_path, "x86_64")


def test_the_image_and_setup_install_the_lock() -> None:
    """The same lock, the same pip flags, in the image (balena's classic builder runs this RUN) and
    in `make setup`; the bridge's own wheel after it, without dependencies."""
    dockerfile = (REPO / "services" / "meter-bridge" / "Dockerfile").read_text().replace("\\\n", " ")
    locked = r"pip install [^\n]*--require-hashes --only-binary=:all: -r \S*requirements\.lock"
    assert re.search(r"COPY meter-bridge/requirements\.lock ", dockerfile)
    assert re.search(locked, dockerfile)
    assert re.search(r"pip wheel [^\n]*--no-deps", dockerfile), "the build stage builds the bridge alone"
    assert re.search(r"pip install [^\n]*--no-deps /wheels/\*\.whl", dockerfile)
    assert dockerfile.index("requirements.lock") < dockerfile.index("--no-deps /wheels")
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r'pip" install -q --require-hashes --only-binary=:all: -r "\$lock"', setup)
    assert "lock=services/meter-bridge/requirements.lock" in setup
    assert "make lock" in (REPO / "README.md").read_text()
