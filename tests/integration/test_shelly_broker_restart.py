"""A Shelly meter across a restart of the broker, through `meter-bridge run` (docs/fidelity.md).

The Home Assistant window run (`helpers.fidelity_ha`) restarted Mosquitto: the Shelly source lost its
connection and made the meters unavailable; on its own broker (`persistence false`) the devices'
retained `<prefix>/online` was gone, and a frame taken in afterwards set the device online inside
the source without telling the hub. The two Shelly meters stayed `offline` in HA, whose statistics
then skipped the recorded state of the period, while their frames kept coming every 10 s. Here the
same: Shelly frames as the harness sends them (`ShellyPublisher`, no `online` topic), the broker
stopped and started again, the last frames sent again after the reconnect, then newer ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest

from helpers.bridgeproc import BridgeProcess
from helpers.fidelity import METERS, ShellyPublisher
from helpers.mosquitto import Mosquitto
from helpers.mqtt import Recorder, recording

pytestmark = pytest.mark.slow

PLUG = next(m for m in METERS if m.name == "plug")
AVAILABILITY = f"hems/meter/{PLUG.meter_id}/availability"
RECORDED = f"hems/meter/{PLUG.meter_id}/recorded"
TOPICS = ("hems/meter/+/availability", "hems/meter/+/recorded", "hems/bridge/availability")


def _config(broker: Mosquitto, data: Path) -> str:
    return (
        "site: {id: fid}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: bridge, password: '${{MQTT_PASSWORD}}', "
        "base_topic: hems, client_id: restart-bridge}\n"
        "health: {port: {health_port}}\n"
        "homeassistant: {recorded_interval_s: 10}\n"
        f"totals: {{path: '{data / 'totals.json'}'}}\n"
        "sources:\n"
        "  - type: shelly\n"
        "    id: sh\n"
        "    discover: false\n"
        "    reemit_s: 3600\n"
        "    devices:\n"
        "      - {prefix: fid/plug, id: plug, relays: false}\n"
    )


def _recorded_totals(rec: Recorder) -> list[float]:
    return [json.loads(payload)["energy_import"] for topic, payload, _ in rec.messages if topic == RECORDED]


async def _send(shelly: ShellyPublisher, ts: int, kwh: float) -> None:
    def publish() -> None:
        info = shelly.publish(PLUG, ts, 500, kwh)
        assert info is not None
        info.wait_for_publish(30)

    await asyncio.to_thread(publish)


async def _until_recorded(shelly: ShellyPublisher, rec: Recorder, kwh: float) -> None:
    """Send a frame with total `kwh` every 2 s (a device's frames keep coming) until it is recorded."""
    for _ in range(60):  # a hang bound
        await _send(shelly, int(time.time()), kwh)
        with contextlib.suppress(AssertionError):
            await rec.wait_for(lambda r: kwh in _recorded_totals(r), timeout=2)
            return
    raise AssertionError(f"{kwh} kWh never recorded: {_recorded_totals(rec)}")


async def test_a_shelly_meter_whose_frames_keep_coming_is_available_after_a_broker_restart(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    bridge = BridgeProcess(tmp_path / "bridge", "", env={"MQTT_PASSWORD": broker.password("bridge")})
    shelly = ShellyPublisher(broker)
    try:
        await asyncio.to_thread(bridge.start, _config(broker, tmp_path / "data"))
        # device time (the last 40 s, as the harness's real time) and the counter in kWh, whole Wh so
        # that totals compare exactly
        start = int(time.time()) - 40
        sent: list[tuple[int, float]] = [(start + 10 * i, (1000 + i) / 1000) for i in range(4)]
        await asyncio.to_thread(shelly.connect)
        async with recording(broker, *TOPICS) as before:
            for ts, kwh in sent:
                await _send(shelly, ts, kwh)
            await before.wait_for(lambda r: sent[-1][1] in _recorded_totals(r), timeout=120)
            assert before.last[AVAILABILITY] == b"online"

        # as the harness: the devices' client closed, the broker stopped and started, the client
        # back, and its last frames sent again (older than the last the bridge took in)
        shelly.close()
        await asyncio.to_thread(broker.restart)
        await asyncio.to_thread(shelly.connect)
        async with recording(broker, *TOPICS) as after:
            newer = [(1000 + i) / 1000 for i in (4, 5)]
            # each newer total reaches the recorded topic (a state per step); the first sent until the
            # bridge's Shelly source is subscribed again (what goes out before is lost, as a device's)
            await _until_recorded(shelly, after, newer[0])
            for ts, kwh in sent[-3:]:  # frames sent again, older than the last taken in
                await _send(shelly, ts, kwh)
            await _until_recorded(shelly, after, newer[1])
            # the meter reads, so it is there: the source says so before the readings, the HA sink
            # publishes a meter's availability before its recorded state
            availability = [payload for topic, payload, _ in after.messages if topic == AVAILABILITY]
            assert availability[-1] == b"online", availability
            assert after.last["hems/bridge/availability"] == b"online"
            totals = _recorded_totals(after)
            assert totals == sorted(totals)  # the frames sent again lowered nothing
            assert totals[-1] == newer[-1]
    finally:
        shelly.close()
        await asyncio.to_thread(bridge.stop)
        broker.stop()
