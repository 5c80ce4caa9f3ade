"""meter-bridge: home energy meters in, Home Assistant, InfluxDB and Sense out."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("meterbridge")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
