"""`meter-bridge watch`: a live terminal view of the meters' retained states on MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from .config import BridgeConfig
from .errors import BridgeError, BrokerError
from .mqtt import MqttClient, endpoint
from .mqttsession import MqttSession


def render(states: dict[str, dict[str, Any]], availability: dict[str, str]) -> str:
    """A table of meters with their latest power and totals."""
    lines = [f"{'meter':<16} {'state':<8} {'power W':>10} {'import kWh':>12} {'export kWh':>12}  updated"]
    for meter_id in sorted(states):
        state = states[meter_id]

        def num(key: str, fmt: str, state: dict[str, Any] = state) -> str:
            value = state.get(key)
            width = int(fmt.split(".")[0])
            return format(value, fmt) if isinstance(value, int | float) else "-".rjust(width)

        lines.append(
            f"{meter_id:<16} {availability.get(meter_id, '?'):<8} {num('power', '10.1f')} "
            f"{num('energy_import', '12.3f')} {num('energy_export', '12.3f')}  {str(state.get('ts', ''))[11:19]}"
        )
    return "\n".join(lines)


async def watch(config: BridgeConfig, seconds: float | None = None) -> None:
    """Print the table each second until interrupted (or for `seconds`); waits for the broker."""
    states: dict[str, dict[str, Any]] = {}
    availability: dict[str, str] = {}
    deadline = None if seconds is None else time.monotonic() + seconds
    session = MqttSession(
        config.mqtt, f"{config.client_id}-watch-{int(time.time())}", name="watch", initial_s=0.2, maximum_s=5.0
    )

    def waiting(error: BridgeError) -> None:
        print(f"{error}; waiting for the broker", file=sys.stderr)

    def over() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    await session.run(
        lambda client: _watch_connected(client, config, states, availability, deadline), on_down=waiting, closing=over
    )


async def _watch_connected(
    client: MqttClient,
    config: BridgeConfig,
    states: dict[str, dict[str, Any]],
    availability: dict[str, str],
    deadline: float | None,
) -> None:
    base = config.mqtt.base_topic
    await client.subscribe(f"{base}/meter/#")

    async def receive() -> None:
        async for message in client.messages:
            parts = message.topic.split("/")
            payload = message.payload
            if len(parts) == 3:
                with contextlib.suppress(ValueError):
                    states[parts[2]] = json.loads(payload)
            elif len(parts) == 4 and parts[3] == "availability":
                availability[parts[2]] = payload.decode(errors="replace")

    receiver = asyncio.create_task(receive())
    try:
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(1)
            if receiver.done():
                receiver.result()  # re-raises the connection error
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            sys.stdout.write(f"meter-bridge watch ({endpoint(config.mqtt)}), Ctrl-C to stop\n")
            sys.stdout.write(render(states, availability) + "\n\n")
            sys.stdout.flush()
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, BrokerError):
            await receiver
