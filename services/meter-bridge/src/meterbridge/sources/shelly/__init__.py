"""Shelly Gen2+ meters and relays (Plus 1PM, PM Mini Gen3, Pro 3EM, Pro EM, Gen4).

`parser` is pure (status merging, components to readings); `source` is the MQTT
transport; `rpc` talks HTTP RPC with digest auth; `provision` is the
`meter-bridge shelly provision` command; `relay` switches relays over MQTT RPC;
`config` holds the settings. Nothing is imported here, so that loading the schema
(which imports `config`) loads no transport.
"""
