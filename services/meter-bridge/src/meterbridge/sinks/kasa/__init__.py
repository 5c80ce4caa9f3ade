"""Emulated TP-Link Kasa HS110 plugs, for a Sense monitor and any Kasa client.

`protocol` is pure (cipher, framing, request -> response); `plugs` turns the latest
readings into each plug's values; `server` owns the UDP and TCP sockets; `sink` is
the `Sink` that feeds them. `config` holds the `kasa` config section.
"""
