"""From a source's config to the running `Source`, through the family table (`meterbridge.families`)."""

from __future__ import annotations

from typing import Any

from ..families import family_of
from ..sections import MqttContext
from . import Source


def build_source(config: object, context: MqttContext) -> Source[Any]:
    """The `Source` for `config`; raises `TypeError` for a config of no known family.

    MQTT-fed sources use the bridge's broker, each with its own client id
    (`<bridge client id>-<source id>`).
    """
    return family_of(config).factory(config, context)
