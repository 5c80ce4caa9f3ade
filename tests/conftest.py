"""Fixtures shared by every test: real peers on 127.0.0.1 with ports chosen at run time."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from helpers.emu2_sim import Emu2Simulator
from helpers.homeassistant import HomeAssistant
from helpers.mosquitto import Mosquitto
from helpers.release import ReleaseBroker
from helpers.usb_sysfs import EMU2, FakeSysfs, pty_numbers
from helpers.victoria import Victoria
from meterbridge import usbserial

# CI runs on 2 shared cores: no per-example deadline, and a fixed seed so a red run can be
# reproduced; locally hypothesis keeps exploring new examples each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


#: The release's data volume path inside the bridge's image; on this machine nothing may write it.
MACHINE_DATA_DIR = Path("/data")


@pytest.fixture(autouse=True)
def _machine_data_dir_untouched() -> Iterator[None]:
    """Fails the test that created this machine's own /data: the bridge's default paths point
    there (the image's data volume), so a test running the release config as root would write,
    and later read back, state that is not its own (a totals file from another run drops its
    readings as older than what was applied). Paths go into the test's directory
    (helpers.release.release_bridge_config_text)."""
    existed = MACHINE_DATA_DIR.exists()
    yield
    if not existed and MACHINE_DATA_DIR.exists():
        found = sorted(str(p) for p in MACHINE_DATA_DIR.rglob("*"))[:10]
        shutil.rmtree(MACHINE_DATA_DIR, ignore_errors=True)
        pytest.fail(f"this test wrote the machine's own {MACHINE_DATA_DIR}: {found}")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto shared by the session (users `bridge` and `observer`, auth on).

    Tests that share it use a unique base topic each (see `base_topic`).
    """
    instance = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own (for tests that stop or restart it)."""
    instance = Mosquitto(tmp_path / "mosquitto")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[Victoria]:
    """A VictoriaMetrics per test (the InfluxDB v2 write peer), on a free loopback port."""
    vm = Victoria(tmp_path / "vm")
    vm.start()
    yield vm
    vm.stop()


@pytest.fixture
def base_topic(request: pytest.FixtureRequest) -> str:
    """A base topic unique to this test, so tests sharing a broker never see each other."""
    name = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    return f"t_{name}_{id(request) % 100000}"


@pytest.fixture(scope="session")
def homeassistant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    """The pinned Home Assistant shared by the session (recorder, api, websocket; no MQTT).

    Onboarded; `homeassistant.token` is a long-lived admin token. See tests/helpers/homeassistant.py.
    """
    instance = HomeAssistant(tmp_path_factory.mktemp("homeassistant"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def homeassistant_mqtt(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[HomeAssistant]:
    """A session Home Assistant whose MQTT integration uses the session `broker` (user `observer`)."""
    instance = HomeAssistant(tmp_path_factory.mktemp("homeassistant_mqtt"), mqtt=broker)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def homeassistant_factory(tmp_path: Path) -> Iterator[Callable[..., HomeAssistant]]:
    """Per test: `ha = homeassistant_factory(mqtt=broker, extra_yaml=...)` starts an HA of this test's own."""
    started: list[HomeAssistant] = []

    def factory(**kwargs: Any) -> HomeAssistant:
        instance = HomeAssistant(tmp_path / f"homeassistant{len(started)}", **kwargs)
        started.append(instance)
        instance.start()
        return instance

    yield factory
    for instance in started:
        instance.stop()


@pytest.fixture(scope="session")
def release_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseBroker]:
    """One broker set up by the mqtt entrypoint, shared by the tests that only connect to it."""
    broker = ReleaseBroker(tmp_path_factory.mktemp("release-mqtt"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def home_broker(tmp_path: Path) -> Iterator[ReleaseBroker]:
    """The release's broker for this test's home alone (found families read fixed topics such as `shelly/+`)."""
    broker = ReleaseBroker(tmp_path / "mqtt")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def emu2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emu2Simulator]:
    """An EMU-2 plugged in as ttyACM0: sysfs lists it with Rainforest's USB ids, /dev has its node."""
    sim = Emu2Simulator(tmp_path / "emu2").start()
    sysfs, dev = FakeSysfs(tmp_path / "sys"), tmp_path / "dev"
    dev.mkdir()
    slave = os.readlink(sim.port)
    (dev / "ttyACM0").symlink_to(slave)  # a pseudo-terminal opens only through devpts
    sysfs.plug(EMU2, "ttyACM0", pty_numbers(slave))
    monkeypatch.setattr(usbserial, "SYSFS_TTY_DIR", sysfs.tty_dir)
    monkeypatch.setattr(usbserial, "DEV_DIR", dev)
    yield sim
    sim.stop()
