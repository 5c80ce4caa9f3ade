"""A small asyncio helper shared by the bridge's background loops."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> None:
    """Return once `event` is set or `timeout_s` seconds have passed (None: no limit).

    On the timeout the event is set by a timer, so callers that `clear()` it at the top
    of their loop see no difference. A timer, not `asyncio.wait_for`: that starts a task
    for every wait, and on Python 3.11 it can swallow a cancellation that arrives as the
    event is set, so a stopping loop would run on.
    """
    timer = None if timeout_s is None else asyncio.get_running_loop().call_later(max(0.0, timeout_s), event.set)
    try:
        await event.wait()
    finally:
        if timer is not None:
            timer.cancel()
