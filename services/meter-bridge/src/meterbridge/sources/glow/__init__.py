"""UK SMETS2 smart meters through a Hildebrand Glow CAD's local MQTT: `config`, `parser` (pure), `source`.

Kept as separate modules so that the config schema can import `config` without
pulling in the MQTT transport (which itself imports the schema).
"""
