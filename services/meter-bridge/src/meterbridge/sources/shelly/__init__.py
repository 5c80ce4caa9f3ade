"""Shelly Gen2+ meters and relays (Plus 1PM, PM Mini Gen3, Pro 3EM, Pro EM, Gen4).

`parser` is pure (status merging, components to readings); `source` is the MQTT
transport; `rpc` talks HTTP RPC with digest auth; `provision` is the
`meter-bridge shelly provision` command; `relay` switches relays over MQTT RPC.
Only `config` is imported here: the config schema imports this package.
"""

from .config import ShellyDeviceConfig, ShellySourceConfig

__all__ = ["ShellyDeviceConfig", "ShellySourceConfig"]
