"""openleadr's real VTN on loopback (TLS + signed messages) -> our VEN -> relays on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openleadr import OpenADRServer, utils
from openleadr.messaging import create_message, parse_message

from helpers.mosquitto import Mosquitto
from helpers.net import free_port
from helpers.relay_sim import RelaySim, relay_sim
from helpers.tlscerts import TestCa
from integration.flexutil import (
    SETTLE_IMMERSION_KWH,
    SETTLE_SITE_KWH,
    SETTLE_START,
    flex_config,
    flex_controller,
    running,
    settlement_event,
    wait_until,
    write_settlement_history,
)
from meterbridge.flex.controller import FlexController

VEN_ID = "ven-home"
POWERS = {"immersion": 3000.0, "ev": 7000.0}


class Vtn:
    """openleadr's OpenADRServer with TLS, signing, a VEN registry and recorders."""

    def __init__(self, tmp: Path) -> None:
        self.ca = TestCa(tmp / "pki")
        self.vtn_files = self.ca.issue("vtn")
        self.ven_files = self.ca.issue("ven")
        self.ven_fingerprint = utils.certificate_fingerprint(self.ven_files.cert.read_text())
        self.vtn_fingerprint = utils.certificate_fingerprint(self.vtn_files.cert.read_text())
        self.port = free_port()
        self.server = OpenADRServer(
            vtn_id="HEMS-TEST-VTN",
            http_host="127.0.0.1",
            http_port=self.port,
            cert=str(self.vtn_files.cert),
            key=str(self.vtn_files.key),
            http_cert=str(self.vtn_files.cert),
            http_key=str(self.vtn_files.key),
            http_ca_file=str(self.ca.ca_file),
            ven_lookup=self.ven_lookup,
            requested_poll_freq=timedelta(seconds=1),
            show_fingerprint=False,
        )
        self.registered: list[str] = []
        self.opt_responses: list[tuple[str, str]] = []
        self.create_opts: list[dict[str, Any]] = []
        self.reports: list[tuple[str, float]] = []
        #: (resource, interval start, Wh) of delivered energy (energyReal, deltaUsage)
        self.deliveries: list[tuple[str, datetime, float]] = []
        self.server.add_handler("on_create_party_registration", self.on_create_party_registration)
        self.server.add_handler("on_register_report", self.on_register_report)
        # openleadr's VTN has no EiOpt endpoint (its OptService is a stub): this route
        # parses the VEN's oadrCreateOpt with openleadr's own parser and acknowledges it.
        self.server.app.add_routes([web.post(f"{self.server.http_path_prefix}/EiOpt", self.ei_opt)])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/OpenADR2/Simple/2.0b"

    def ven_lookup(self, ven_id: str) -> dict[str, Any]:
        if ven_id != VEN_ID:
            return {}
        return {
            "ven_id": VEN_ID,
            "ven_name": "hems-home",
            "fingerprint": self.ven_fingerprint,
            "registration_id": "reg-1",
        }

    def on_create_party_registration(self, info: dict[str, Any]) -> tuple[str, str] | bool:
        if info.get("fingerprint") != self.ven_fingerprint:
            return False
        self.registered.append(info["ven_name"])
        return VEN_ID, "reg-1"

    def on_register_report(
        self,
        ven_id: str,
        resource_id: str,
        measurement: str,
        unit: str,
        scale: str,
        min_sampling_interval: timedelta,
        max_sampling_interval: timedelta,
    ) -> Any:
        def on_data(data: list[tuple[datetime, float]]) -> None:
            if measurement == "RealEnergy":  # openleadr gives the description of energyReal
                self.deliveries.extend((resource_id, at, value) for at, value in data)
            else:
                self.reports.extend((resource_id, value) for _, value in data)

        return on_data, timedelta(seconds=1)

    def on_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opt_responses.append((event_id, opt_type))
        # openleadr forgets the callback after the first answer; keep listening for the opt-out.
        event = utils.find_by(self.server.events[ven_id], "event_descriptor.event_id", event_id)
        self.server.event_callbacks[event_id] = (event, self.on_opt)

    async def ei_opt(self, request: web.Request) -> web.Response:
        kind, payload = parse_message(await request.read())
        self.create_opts.append({"kind": kind, **payload})
        reply = create_message(
            "oadrCreatedOpt",
            response={"response_code": 200, "response_description": "OK", "request_id": payload["request_id"]},
            opt_id=payload["opt_id"],
        )
        return web.Response(text=reply, content_type="application/xml")

    def add_event(self, start: datetime, duration_s: float, level: int = 2) -> str:
        return str(
            self.server.add_event(
                ven_id=VEN_ID,
                signal_name="simple",
                signal_type="level",
                intervals=[{"dtstart": start, "duration": timedelta(seconds=duration_s), "signal_payload": level}],
                callback=self.on_opt,
            )
        )


async def expect_next_event_opted_out(vtn: Vtn, sim: RelaySim) -> None:
    """A new event gets optOut at the VTN and no relay moves."""
    event_id = vtn.add_event(datetime.now(UTC) + timedelta(seconds=1), duration_s=5, level=3)
    await wait_until(lambda: (event_id, "optOut") in vtn.opt_responses, 60, "optOut of the next event")
    await asyncio.sleep(2)
    assert all(r.on for r in sim.relays.values())


def ven_flex(vtn: Vtn) -> dict[str, Any]:
    return {
        "openadr": {
            "enabled": True,
            "vtn_url": vtn.url,
            "ven_name": "hems-home",
            "cert": str(vtn.ven_files.cert),
            "key": str(vtn.ven_files.key),
            "ca_file": str(vtn.ca.ca_file),
            "vtn_fingerprint": vtn.vtn_fingerprint,
            "report_interval_s": 1,
        }
    }


@contextlib.asynccontextmanager
async def registered_ven(
    broker: Mosquitto, base_topic: str, tmp_path: Path
) -> AsyncIterator[tuple[Vtn, RelaySim, FlexController]]:
    """openleadr's VTN running, relays simulated on the broker, our VEN registered with the VTN."""
    vtn = Vtn(tmp_path)
    await vtn.server.run()
    try:
        config = flex_config(broker, base_topic, tmp_path, POWERS, **ven_flex(vtn))
        async with (
            relay_sim(broker, base_topic, POWERS) as sim,
            running(flex_controller(config), sim) as flex,
        ):
            await wait_until(lambda: vtn.registered, 60, "VEN registration")
            yield vtn, sim, flex
    finally:
        await vtn.server.stop()


async def test_event_opt_in_shed_and_staggered_restore_with_reports(
    broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    async with registered_ven(broker, base_topic, tmp_path) as (vtn, sim, flex):
        start = datetime.now(UTC) + timedelta(seconds=4)
        # level 3 of 10 kW flexible power: both relays must go.
        event_id = vtn.add_event(start, duration_s=6, level=3)
        # (The bounds below only stop a hang: on a loaded machine the optIn may even come after
        # the start, so "nothing before the start" is read from the decision log, not the relays.)
        await wait_until(lambda: (event_id, "optIn") in vtn.opt_responses, 60, "optIn at the VTN")
        await sim.wait("immersion", False, 60)
        await sim.wait("ev", False, 60)
        # The end: back on one by one, last shed first, stagger_s (2 s) apart by the ticks of the
        # controller that decided it (the relays' arrival times add the machine's delays).
        on_ev = await sim.wait("ev", True, 60)
        on_immersion = await sim.wait("immersion", True, 60)
        assert on_ev < on_immersion
        # the relay hears the command before the controller has its acknowledgement and notes the change
        restored = lambda: all(flex.assets[a].state.value == "normal" for a in ("ev", "immersion"))  # noqa: E731
        await wait_until(restored, 60, "both restored in the controller")
        restored_ev, restored_immersion = flex.assets["ev"].changed_at, flex.assets["immersion"].changed_at
        assert restored_ev is not None
        assert restored_immersion is not None
        assert restored_immersion - restored_ev >= timedelta(seconds=2)
        await wait_until(lambda: {r for r, _ in vtn.reports} >= {"site", "immersion", "ev"}, 60, "reports")
        site_values = [v for r, v in vtn.reports if r == "site"]
        assert max(site_values) >= 10_000  # the simulated site import as the VEN saw it
        log = [json.loads(line) for line in (tmp_path / "flex-events.jsonl").read_text().splitlines()]
        kinds = [(e["kind"], e.get("asset_id"), e.get("state")) for e in log]
        # nothing switched before the event started
        assert all(datetime.fromisoformat(e["ts"]) >= start for e in log if e["kind"] == "switch")
        assert ("opt_in", None, None) in kinds
        assert ("switch", "immersion", "shed") in kinds
        assert ("switch", "ev", "normal") in kinds
        assert flex.stats.gauges["events_accepted"] == 1


async def test_participation_off_opts_out_and_householder_opt_out_is_reported(
    broker: Mosquitto, base_topic: str, tmp_path: Path
) -> None:
    async with registered_ven(broker, base_topic, tmp_path) as (vtn, sim, flex):
        event_id = vtn.add_event(datetime.now(UTC) + timedelta(seconds=1), duration_s=60, level=1)
        await sim.wait("immersion", False, 60)
        await flex.handle_command(flex.topics.command("opt_out"), b"PRESS")
        await sim.wait("immersion", True, 30)  # at once, not staggered (the bound only stops a hang)
        await wait_until(lambda: (event_id, "optOut") in vtn.opt_responses, 60, "optOut at the VTN")
        assert any(o["kind"] == "oadrCreateOpt" and o["opt_type"] == "optOut" for o in vtn.create_opts)
        # Participation off: the next event is opted out and nothing switches.
        await flex.handle_command(flex.topics.command("participation"), b"OFF")
        await expect_next_event_opted_out(vtn, sim)


async def test_settled_event_is_reported_to_the_vtn(broker: Mosquitto, base_topic: str, tmp_path: Path) -> None:
    """Delivered Wh per counted period and metered resource, in the telemetry report (issue 27)."""
    write_settlement_history(tmp_path / "flex-ledger.jsonl")  # beside flex-state.json: the default ledger
    async with registered_ven(broker, base_topic, tmp_path) as (vtn, _sim, flex):
        assert flex.submit_event(settlement_event())
        await wait_until(lambda: len(vtn.deliveries) >= 4, 30, "delivery reports at the VTN")
        await asyncio.sleep(2)  # nothing more arrives
    half_hour = timedelta(minutes=30)
    expected = [("site", SETTLE_START + k * half_hour, kwh * 1000) for k, kwh in enumerate(SETTLE_SITE_KWH)]
    expected += [("immersion", SETTLE_START + k * half_hour, kwh * 1000) for k, kwh in enumerate(SETTLE_IMMERSION_KWH)]
    assert sorted(vtn.deliveries) == [(r, at, pytest.approx(wh)) for r, at, wh in sorted(expected)]
    # the ev has no history: nothing is claimed for it
    assert all(resource != "ev" for resource, _, _ in vtn.deliveries)
