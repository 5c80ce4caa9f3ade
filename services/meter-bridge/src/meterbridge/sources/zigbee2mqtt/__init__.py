"""Zigbee meters and plugs through Zigbee2MQTT: `config` (schema), `parser` (pure), `source` (MQTT).

Kept as separate modules so that the config schema can import `config` without
pulling in the MQTT transport (which itself imports the schema).
"""
