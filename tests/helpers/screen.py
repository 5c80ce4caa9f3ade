"""What a long-running command prints, read line by line as a person's terminal would show it."""

from __future__ import annotations

import re
import subprocess
import threading
import time


class Screen:
    """The lines a process prints, collected by a thread; `wait_for` a pattern with a hang bound."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 30.0) -> int:
        """The index of the first line from `after` on matching `pattern`; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after, len(self.lines)):
                if re.search(pattern, self.lines[index]):
                    return index
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} after {timeout} s:\n" + "\n".join(self.lines[-30:]))
