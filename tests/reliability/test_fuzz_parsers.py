"""Fuzzing every parser that reads data from outside: arbitrary and mutated input raises nothing
but the parser's documented error, and memory stays bounded.

Two engines (atheris needs clang's libFuzzer, which this machine does not have):
- hypothesis (`st.binary()` and structured JSON), `max_examples` from `HEMS_FUZZ_EXAMPLES`;
- a seeded mutation fuzzer over the fixture corpus (bit flips, byte and chunk insertion,
  deletion, duplication, splicing of two seeds, truncation): `HEMS_FUZZ_INPUTS` inputs per
  parser (3,000 in `make test`, 1,000,000 in `make reliability`), bounded by
  `HEMS_FUZZ_BUDGET_S` seconds per parser; the count actually run is reported.
The EMU-2 parser is fed the whole run as one endless stream into one instance (it keeps a
partial buffer, so that is where memory could grow); tracemalloc's peak over a slice of the
run is the memory figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.families import fuzz_targets
from helpers.figures import record as record_figure
from helpers.figures import scale
from meterbridge.config import validate_data
from meterbridge.errors import ConfigError, ParseError
from meterbridge.sinks.kasa.protocol import FrameDecoder, PlugSnapshot, decrypt, respond_bytes
from meterbridge.yamlsource import load_yaml

FIXTURES = Path(__file__).parents[1] / "fixtures"
DEFAULT_CONFIG = Path(__file__).parents[2] / "services" / "meter-bridge" / "default-config.yaml"
INPUTS = int(os.environ.get("HEMS_FUZZ_INPUTS", scale(3000, 1_000_000)))
BUDGET_S = float(os.environ.get("HEMS_FUZZ_BUDGET_S", scale(20, 110)))
EXAMPLES = int(os.environ.get("HEMS_FUZZ_EXAMPLES", scale(150, 5000)))
PLUG = PlugSnapshot(
    "Heat pump", "50:C7:BF:00:00:01", "80060000000000000000000000000000000001", "hw", 512.0, 230.0, 2.2, 12.5
)


def _kasa(data: bytes) -> None:
    decoder = FrameDecoder()
    for message in decoder.feed(data):
        respond_bytes(decrypt(message), PLUG)
    respond_bytes(decrypt(data), PLUG)  # a UDP datagram is one encrypted message, no length prefix


def _config(data: bytes) -> None:
    loaded = load_yaml(data.decode("utf-8", errors="replace"), {"MQTT_PASSWORD": "x" * 16})
    validate_data(loaded)


def _flex_event(data: bytes) -> None:
    from meterbridge.flex.events import parse_event_message

    parse_event_message(data, "fuzz")


#: Valid community events in the documented schema (docs/flex-event.schema.json).
FLEX_EVENT_SEEDS = [
    b'{"id": "dfs-2026-11-21", "start": "2026-11-21T17:00:00Z", "duration_s": 3600, "direction": "down", '
    b'"target_w": 1500}',
    b'{"id": "up-1", "start": "2026-11-21T12:00:00+01:00", "duration_s": 900, "direction": "up", "level": 2}',
    b'{"id": "x", "start": "2026-01-01T00:00:00Z", "duration_s": 1, "direction": "down", "level": 3}',
]


def _corpus(*patterns: str) -> list[bytes]:
    seeds = [p.read_bytes() for pattern in patterns for p in sorted(FIXTURES.glob(pattern))]
    assert seeds, patterns
    return seeds


def _kasa_corpus() -> list[bytes]:
    from meterbridge.sinks.kasa.protocol import encrypt, frame

    seeds = [p.read_bytes() for p in sorted((FIXTURES / "kasa").glob("*.request.json"))]
    return [frame(s) for s in seeds] + [encrypt(s) for s in seeds]


#: name -> (makes a fresh target for a run, the errors it may raise, its seed corpus). Every family
#: with a raw parser in the family table is a target (`helpers.families.fuzz_targets`); so are the
#: Kasa protocol, community flex events and the config loader.
Target = tuple[Callable[[], Callable[[bytes], object]], tuple[type[Exception], ...], Callable[[], list[bytes]]]
TARGETS: dict[str, Target] = {
    **{name: (make, (ParseError,), corpus) for name, (make, corpus) in fuzz_targets().items()},
    "kasa": (lambda: _kasa, (ParseError,), _kasa_corpus),
    "flex_event": (lambda: _flex_event, (ParseError,), lambda: list(FLEX_EVENT_SEEDS)),
    "config": (
        lambda: _config,
        (ConfigError,),
        lambda: [*_corpus("config/*.yaml"), Path("services/meter-bridge/default-config.yaml").read_bytes()],
    ),
}
_MADE: dict[str, Callable[[bytes], object]] = {}


def target_for(name: str) -> Callable[[bytes], object]:
    """The target of `name`, made once per process (hypothesis calls it once per example)."""
    if name not in _MADE:
        _MADE[name] = TARGETS[name][0]()
    return _MADE[name]


_INTERESTING = (b"\x00", b"\xff", b"<", b">", b"&", b'"', b"{", b"[", b"\\u0000", b"-1", b"1e309", b"0xFFFFFFFFFF")


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    """One mutated input from the seeds (a few stacked mutations)."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # bit flip
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # interesting byte(s)
            data[pos:pos] = rng.choice(
                [b"\x00", b"\xff", b"<", b">", b"&", b'"', b"{", b"[", b"\\u0000", b"-1", b"1e309"]
            )
        elif op == 2 and data:  # delete a chunk
            del data[pos : pos + rng.randint(1, 64)]
        elif op == 3 and data:  # duplicate a chunk
            chunk = data[pos : pos + rng.randint(1, 64)]
            data[pos:pos] = chunk * rng.randint(1, 8)
        elif op == 4:  # splice another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data = data[:pos] + other[cut:]
        elif op == 5:  # truncate
            data = data[:pos]
        else:  # random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
    return bytes(data)


@pytest.mark.parametrize("name", list(TARGETS))
def test_mutation_fuzz(name: str, request: pytest.FixtureRequest) -> None:
    make, allowed, corpus = TARGETS[name]
    seeds = corpus()
    rng = random.Random(f"hems-{name}")  # noqa: S311 - fuzzing, not crypto
    target = make()  # fresh for this run: a streaming parser is fed the whole run as one stream
    crashes: list[str] = []
    started = time.monotonic()
    # memory: a slice of the run under tracemalloc (it slows everything ~3x)
    tracemalloc.start()
    slice_n = min(INPUTS, 20_000)
    for _ in range(slice_n):
        _run_one(target, allowed, mutate(rng, seeds), crashes)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ran = slice_n
    while ran < INPUTS and time.monotonic() - started < BUDGET_S:
        for _ in range(1000):
            _run_one(target, allowed, mutate(rng, seeds), crashes)
        ran += 1000
    elapsed = time.monotonic() - started
    record_figure(
        f"fuzz_{name}",
        area="Fuzzing",
        check=f"{name}: mutated fixture corpus ({len(seeds)} seeds), seeded",
        goal="1,000,000 inputs, 0 uncaught exceptions, memory bounded",
        measured=(
            f"{ran:,} inputs in {elapsed:.0f} s, {len(crashes)} uncaught exceptions; "
            f"tracemalloc peak {peak / 1024:.0f} KiB over {slice_n:,} inputs"
        ),
        ok=not crashes and peak < 32 * 1024 * 1024,
        test=request.node.nodeid,
        inputs=ran,
    )
    assert not crashes, crashes[:5]
    assert peak < 32 * 1024 * 1024


def _run_one(
    target: Callable[[bytes], object], allowed: tuple[type[Exception], ...], data: bytes, crashes: list[str]
) -> None:
    try:
        target(data)
    except allowed:
        pass
    except Exception as err:
        crashes.append(f"{type(err).__name__}: {err} <- {data[:200]!r}")


@pytest.mark.parametrize("name", list(TARGETS))
@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=4096))
def test_hypothesis_arbitrary_bytes(name: str, data: bytes) -> None:
    _, allowed, _ = TARGETS[name]
    with contextlib.suppress(allowed):
        target_for(name)(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)


@pytest.mark.parametrize("name", ["shelly", "zigbee2mqtt", "glow", "kasa"])
@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))
@given(value=_json)
def test_hypothesis_structured_json(name: str, value: object) -> None:
    """Valid JSON of any shape (the likely bad input from a device) is handled like bytes."""
    _, allowed, _ = TARGETS[name]
    target = target_for(name)
    payload = json.dumps(value).encode()
    if name == "kasa":
        from meterbridge.sinks.kasa.protocol import frame

        payload = frame(payload)
    with contextlib.suppress(allowed):
        target(payload)


def test_flex_event_seeds_are_valid_events() -> None:
    """The fuzz corpus starts from events the bridge accepts, so mutations probe near-valid input."""
    from meterbridge.flex.events import parse_event_message

    for seed in FLEX_EVENT_SEEDS:
        assert parse_event_message(seed, "seed").event_id
