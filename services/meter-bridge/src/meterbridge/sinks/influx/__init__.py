"""The InfluxDB 2 sink: line protocol schema, durable spool, sender, replication health."""

from .sink import InfluxSink

__all__ = ["InfluxSink"]
