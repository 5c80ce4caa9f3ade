"""`make bench`: run every benchmark script in this folder; each prints its own figures.

Benchmarks report, they never fail on time. Run one alone with `.venv/bin/python tests/bench/<name>.py`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.run([sys.executable, str(script), *sys.argv[1:]], check=False).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks that did not complete: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
