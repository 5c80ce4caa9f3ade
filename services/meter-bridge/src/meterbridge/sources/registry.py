"""From a source's config to the running `Source`: the one place that knows every family."""

from __future__ import annotations

from typing import Any

from ..configbase import SourceConfigBase
from . import Source
from .emu2.config import Emu2SourceConfig
from .emu2.source import Emu2Source
from .simulated import SimulatedSource, SimulatedSourceConfig


def build_source(config: SourceConfigBase) -> Source[Any]:
    """The `Source` for `config`; raises `TypeError` for a config of no known family."""
    if isinstance(config, SimulatedSourceConfig):
        return SimulatedSource(config)
    if isinstance(config, Emu2SourceConfig):
        return Emu2Source(config)
    raise TypeError(f"no source implements {type(config).__name__}")
