"""Resident memory of every process of the native stack (`make demo`'s) with 10 meters, over time.

Starts `scripts/demo.sh` detached (supervisord; Mosquitto, the bridge, the pinned Home Assistant
seeded by hems_seed.py, nginx and hass-configurator through the release's entrypoints, HA
onboarded and given the demo's backfilled week), then gives the bridge 10 simulated meters
reading every `--interval` s (the demo's four plus six more) and restarts it. Every `--every`
seconds for `--seconds` it reads each program's process tree from `/proc/<pid>/smaps_rollup`:
RSS (resident, shared pages counted in every process that maps them) and PSS (shared pages
divided among their users: the PSS of all processes adds up to what they take from the board).
It prints the samples, the figures at the end and the growth per hour of each program (least
squares over the samples after the first `--settle` seconds).

A plain script (`python tests/bench/bench_memory.py [--seconds 3600] [--every 300]`); prints
figures, asserts nothing. It needs `make setup-ha` (the pinned Home Assistant).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_sd_writes import children

from helpers.net import free_port

REPO = Path(__file__).resolve().parents[2]
HASS = REPO / ".cache" / "ha" / "bin" / "hass"
VENV = Path(sys.executable).parent.parent

PROGRAMS = ("mosquitto", "bridge", "homeassistant", "nginx", "configurator")
#: the demo's household (scripts/demo.sh) and six more meters of the same profiles
EXTRA_PROFILES = ("heat_pump", "ev", "solar", "heat_pump", "ev", "solar")


def bridge_config(demo_config: str, interval_s: float) -> str:
    """The demo's bridge configuration (as scripts/demo.sh wrote it: flex, roles, totals and all)
    with 10 meters instead of 4, every one reading each `interval_s`."""
    config = yaml.safe_load(demo_config)
    config.setdefault("homeassistant", {})["min_interval_s"] = interval_s
    for source in config["sources"]:
        source["interval_s"] = interval_s
    config["sources"] += [
        {
            "type": "simulated",
            "id": f"extra_{n}",
            "profile": profile,
            "seed": n + 10,
            "interval_s": interval_s,
            "rated_w": 3000,
        }
        for n, profile in enumerate(EXTRA_PROFILES)
    ]
    return yaml.safe_dump(config, sort_keys=False)


def rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes from /proc/<pid>/smaps_rollup; (0, 0) for a process that is gone."""
    rss = pss = 0
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key == "Rss":
            rss = int(rest.split()[0]) * 1024
        elif key == "Pss":
            pss = int(rest.split()[0]) * 1024
    return rss, pss


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, number of processes) summed over `pid` and its descendants."""
    rss = pss = 0
    members = children(pid)
    for member in members:
        member_rss, member_pss = rollup(member)
        rss += member_rss
        pss += member_pss
    return rss, pss, len(members)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, bytes) in bytes per hour (0 with fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / den * 3600


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0, help="how long to sample (default 3600)")
    parser.add_argument("--every", type=float, default=300.0, help="seconds between samples (default 300)")
    parser.add_argument("--settle", type=float, default=600.0, help="seconds left out of the slope (default 600)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between readings per meter")
    args, _ = parser.parse_known_args()
    if not HASS.exists():
        print("bench_memory: .cache/ha/bin/hass is missing (make setup-ha); skipped")
        return 0

    base = REPO / ".bench-tmp"
    base.mkdir(exist_ok=True)
    demo_dir = Path(tempfile.mkdtemp(prefix="memory-", dir=base))
    env = {
        **os.environ,
        "DEMO_DIR": str(demo_dir),
        "DEMO_DETACH": "1",
        "VENV": str(VENV),
        **{
            name: str(free_port())
            for name in (
                "DEMO_MQTT_PORT",
                "DEMO_HEALTH_PORT",
                "DEMO_HA_PORT",
                "DEMO_CONFIGURATOR_PORT",
                "DEMO_HTTPS_PORT",
                "DEMO_HTTP_PORT",
            )
        },
    }
    ctl = [str(VENV / "bin" / "supervisorctl"), "-c", str(demo_dir / "supervisord.conf")]
    try:
        started = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        if started.returncode != 0:
            print(started.stdout[-2000:], started.stderr[-3000:], file=sys.stderr)
            return 1
        written = demo_dir / "bridge" / "config.yaml"
        written.write_text(bridge_config(written.read_text(), args.interval))
        restarted = subprocess.run([*ctl, "restart", "bridge"], capture_output=True, text=True, check=False)
        if restarted.returncode != 0:
            print(restarted.stdout, restarted.stderr, file=sys.stderr)
            print((demo_dir / "logs" / "bridge.log").read_text()[-3000:], file=sys.stderr)
            return 1
        supervisord = int((demo_dir / "supervisord.pid").read_text())
        t0 = time.monotonic()
        history: dict[str, list[tuple[float, int, int]]] = {name: [] for name in (*PROGRAMS, "supervisord")}
        print(
            f"10 simulated meters every {args.interval:g} s; samples every {args.every:g} s for {args.seconds:g} s"
            " (RSS / PSS in MiB, whole process tree per program)",
            flush=True,
        )
        print(f"{'t (min)':>7} " + " ".join(f"{name[:13]:>15}" for name in history) + f" {'PSS total':>10}")
        while True:
            now = time.monotonic() - t0
            pids = {
                name: int(subprocess.run([*ctl, "pid", name], capture_output=True, text=True).stdout or 0)
                for name in PROGRAMS
            }
            pids["supervisord"] = supervisord
            row, pss_total = [], 0
            for name, pid in pids.items():
                rss, pss, _ = tree_memory(pid) if pid else (0, 0, 0)
                # supervisord's tree holds every program: count supervisord alone
                if name == "supervisord":
                    rss, pss = rollup(pid)
                history[name].append((now, rss, pss))
                pss_total += pss
                row.append(f"{rss / 2**20:>7.1f}/{pss / 2**20:<7.1f}")
            print(f"{now / 60:>7.1f} " + " ".join(row) + f" {pss_total / 2**20:>10.1f}", flush=True)
            if now + args.every > args.seconds + 1:
                break
            time.sleep(max(0.0, args.every - (time.monotonic() - t0 - now)))

        print(f"\nafter {history['bridge'][-1][0] / 60:.0f} min; slope over samples after {args.settle:g} s")
        print(f"{'program':<15} {'RSS MiB':>9} {'PSS MiB':>9} {'peak RSS':>9} {'RSS MiB/h':>10} {'PSS MiB/h':>10}")
        totals = [0.0, 0.0]
        for name, samples in history.items():
            late = [(t, r, p) for t, r, p in samples if t >= args.settle] or samples
            rss_slope = slope_per_hour([(t, r) for t, r, _ in late]) / 2**20
            pss_slope = slope_per_hour([(t, p) for t, _, p in late]) / 2**20
            _, rss, pss = samples[-1]
            totals[0] += rss
            totals[1] += pss
            peak = max(r for _, r, _ in samples)
            print(
                f"{name:<15} {rss / 2**20:>9.1f} {pss / 2**20:>9.1f} {peak / 2**20:>9.1f}"
                f" {rss_slope:>+10.2f} {pss_slope:>+10.2f}"
            )
        print(f"{'all':<15} {totals[0] / 2**20:>9.1f} {totals[1] / 2**20:>9.1f}")
        print(f"load average: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        subprocess.run(["bash", "scripts/demo.sh", "stop"], cwd=REPO, env=env, capture_output=True, check=False)
        shutil.rmtree(demo_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
