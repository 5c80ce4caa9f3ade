"""Serial transport of the EMU-2 / RAVEn: 115200 8N1 over USB CDC, via pyserial-asyncio-fast.

Thin on purpose: open, read chunks, write commands one at a time with a small gap (the
device does not queue its writes, so back-to-back commands clobber each other's
replies), close. `OSError` and `serial.SerialException` become `SourceConnectionError`
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib

import serial
import serial_asyncio_fast

from ...errors import SourceConnectionError, SourceTimeoutError
from .parser import command

BAUD_RATE = 115200
#: Least time between two commands (seconds).
COMMAND_GAP_S = 0.2
_READ_SIZE = 4096


class Emu2Transport:
    """One open serial connection to the device at `port`."""

    def __init__(self, port: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.port = port
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._last_write = 0.0

    @classmethod
    async def open(cls, port: str) -> Emu2Transport:
        """Open `port` at 115200 8N1; raises `SourceConnectionError` naming the port."""
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=port, baudrate=BAUD_RATE, bytesize=8, parity="N", stopbits=1
            )
        except (OSError, serial.SerialException, ValueError) as err:
            raise SourceConnectionError(f"cannot open {port}: {err}") from err
        return cls(port, reader, writer)

    async def read(self, timeout: float) -> bytes:
        """The next chunk of bytes; `SourceTimeoutError` after `timeout` s of silence,
        `SourceConnectionError` when the port went away (USB unplugged, read error)."""
        try:
            data = await asyncio.wait_for(self._reader.read(_READ_SIZE), timeout)
        except TimeoutError as err:
            raise SourceTimeoutError(f"{self.port}: nothing received for {timeout:.0f} s") from err
        except (OSError, serial.SerialException) as err:
            raise SourceConnectionError(f"{self.port}: read failed: {err}") from err
        if not data:
            raise SourceConnectionError(f"{self.port}: the device went away")
        return data

    async def send(self, name: str, **args: str) -> None:
        """Write one command, waiting `COMMAND_GAP_S` after the previous one."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._last_write + COMMAND_GAP_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                self._writer.write(command(name, **args))
                await self._writer.drain()
            except (OSError, serial.SerialException) as err:
                raise SourceConnectionError(f"{self.port}: write failed: {err}") from err
            self._last_write = loop.time()

    def close(self) -> None:
        """Close the port without waiting (safe on cancellation and after errors)."""
        with contextlib.suppress(OSError, serial.SerialException, RuntimeError):
            self._writer.close()
