"""aiomqtt's per-message "queue is full" warning is folded into a count, not a flood."""

from __future__ import annotations

import logging

import pytest

from meterbridge.mqtt import DiscardedMessagesFilter


def test_discard_warnings_are_counted_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.discard")
    flood = DiscardedMessagesFilter(period_s=0.2)
    logger.addFilter(flood)
    try:
        with caplog.at_level(logging.WARNING, logger="test.discard"):
            for _ in range(1000):
                logger.warning(DiscardedMessagesFilter.MESSAGE)
            logger.warning("something else")
            import time

            time.sleep(0.25)
            logger.warning(DiscardedMessagesFilter.MESSAGE)
    finally:
        logger.removeFilter(flood)
    assert flood.discarded == 1001
    assert caplog.messages[0] == DiscardedMessagesFilter.MESSAGE
    assert caplog.messages[1] == "something else"
    assert caplog.messages[2].startswith(DiscardedMessagesFilter.MESSAGE + " (999 more discarded")
    assert len(caplog.messages) == 3
