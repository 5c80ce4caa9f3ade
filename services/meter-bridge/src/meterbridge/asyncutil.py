"""Small asyncio helpers shared by the bridge's background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging

_LOGGER = logging.getLogger(__name__)


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


async def stop_tasks(tasks: list[asyncio.Task[None]], timeout: float = 3.0) -> None:
    """Cancel `tasks` and wait for them, at most `timeout`; what they raised is dropped.

    Python 3.11's `asyncio.wait_for` (used inside many libraries) can swallow a
    cancellation that races with its result, so loops stopped this way also check a
    closing flag, and this never waits forever.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            _LOGGER.warning("Task %s did not stop in %.0f s", task.get_name(), timeout)
    for task in tasks:
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()
