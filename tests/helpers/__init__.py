"""Shared test helpers: real peers started natively on 127.0.0.1, ports chosen at run time."""
