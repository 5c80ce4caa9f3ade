"""Home Assistant over MQTT: discovery configs, retained JSON state, availability."""

from .discovery import ENTITY_DESCRIPTIONS, QuantityEntity, discovery_message
from .sink import HomeAssistantSink

__all__ = ["ENTITY_DESCRIPTIONS", "HomeAssistantSink", "QuantityEntity", "discovery_message"]
