"""`meter-bridge watch` says when the broker is down and when it is back (a real Mosquitto with
auth, stopped and started), reading the command's own stdout as a person's terminal would.
(The same with the whole demo, Home Assistant included, is in test_demo.py; this one takes seconds.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from helpers.mosquitto import Mosquitto
from helpers.net import free_port
from helpers.screen import Screen

CLOCK = r"\d\d:\d\d:\d\d"  # HH:MM:SS


def test_watch_says_broker_down_since_and_back(own_broker: Mosquitto, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"site": {"id": "watch"}, "mqtt": own_broker.bridge_mqtt("hems")}))
    ha_port = free_port()  # nothing listens there: Home Assistant "not up yet"
    watch = subprocess.Popen(
        [Path(sys.executable).parent / "meter-bridge", "watch", "--config", config, "--ha-url", f"http://127.0.0.1:{ha_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        screen = Screen(watch)
        broker = re.escape(f"broker 127.0.0.1:{own_broker.port}")
        up = screen.wait_for(rf"^{broker} up since {CLOCK}$")
        screen.wait_for(
            rf"^Home Assistant http://127.0.0.1:{ha_port} not up yet, trying since {CLOCK} \(connection refused\)$"
        )
        own_broker.stop()
        down = screen.wait_for(rf"^{broker} down since ({CLOCK}) \(connection refused\)$", after=up)
        down_since = re.search(CLOCK + r"(?= \()", screen.lines[down])
        assert down_since is not None
        own_broker.start()
        back = screen.wait_for(rf"^{broker} up, back since {CLOCK} \(was down from {down_since[0]}, \d+ s\)$", down)
        # every screen between the two says the broker is down, none that it is up
        between = [line for line in screen.lines[down:back] if line.startswith("broker ")]
        assert between
        assert all(" down since " in line for line in between), between
    finally:
        watch.terminate()
        watch.wait(10)
