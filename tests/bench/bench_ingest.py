"""Ingest benchmark: Shelly `NotifyStatus` -> Mosquitto -> bridge -> HA state + VictoriaMetrics,
side by side with the same job in Node-RED, and Mosquitto's own C-to-C rate as the ceiling.

    .venv/bin/python tests/bench/bench_ingest.py [--runs 3] [--burst 100000] [--rate 1000]

Ten PM Mini Gen3-shaped devices publish `NotifyStatus` deltas (~250-byte JSON, QoS 0) on
`<prefix>/events/rpc` from C publishers (`mosquitto_pub -l`, one per device, fed line by
line). The system under test runs as its own process (`meter-bridge run --config ...`, or
`node red.js`), so its CPU (utime+stime) and peak RSS (VmHWM) are read alone from /proc.

- paced: `--rate` messages/s for `--seconds`; latency = arrival of the HA state carrying a
  message's `apower` (a sequence number) at a subscriber in this process, minus the send
  time the pacer wrote into that message (`params.ts`); rate limiting is off
  (`homeassistant.min_interval_s: 0`).
- burst: `--burst` messages written as fast as the publishers go; messages/s = points
  landed in VictoriaMetrics / (last HA state seen - first send).
- points landed: `shelly_power` samples of the run's `site` exported back from
  VictoriaMetrics (one point per message) vs messages sent.
- ceiling: `mosquitto_pub -l` -> Mosquitto -> `mosquitto_sub`, same payload size, QoS 0.

Node-RED 4 and node-red-contrib-influxdb are installed by this script into
`.cache/bench-nodered` (never a test dependency). Its flow: mqtt in -> function (parse
NotifyStatus, map to power/energy as our parser does, keep per-meter state) -> join (100
messages or 1 s) -> `influxdb batch` (InfluxDB 2 API against VictoriaMetrics) + mqtt out
of the state. Results go to `.cache/bench/ingest.json`; `report.py` writes the table.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from report import RESULTS, write_report  # noqa: E402

from helpers.mosquitto import Mosquitto  # noqa: E402
from helpers.net import free_port, stop_process, wait_for_port  # noqa: E402
from helpers.victoria import Victoria, sample_count  # noqa: E402

NODE_RED_DIR = ROOT / ".cache" / "bench-nodered"
NODE_RED_PACKAGES = ["node-red@4", "node-red-contrib-influxdb@0.7"]
DEVICES = [f"shellypmminig3-0000000000{n:02x}" for n in range(10)]
BY_MINUTE = [1.412, 1.405, 1.398]  # with it a delta is ~250 bytes, as a real one
CLK_TCK = os.sysconf("SC_CLK_TCK")


def notify(prefix: str, seq: int, ts: float) -> str:
    """One ~250-byte `NotifyStatus` delta; `apower` carries the sequence number for correlation."""
    energy = 5_000_000.0 + seq  # Wh, rising: the total guard never trips
    body = {
        "src": prefix,
        "method": "NotifyStatus",
        "params": {
            "ts": round(ts, 6),
            "pm1:0": {
                "id": 0,
                "apower": float(seq),
                "voltage": 229.8,
                "current": 0.412,
                "aenergy": {"total": energy, "by_minute": BY_MINUTE, "minute_ts": int(ts)},
            },
        },
    }
    return json.dumps(body, separators=(",", ":"))


def full_status(prefix: str) -> str:
    """The `NotifyFullStatus` a device sends when it connects."""
    component = {"id": 0, "voltage": 229.8, "current": 0.412, "apower": 0.0, "freq": 50.0}
    component["aenergy"] = {"total": 5_000_000.0, "by_minute": BY_MINUTE, "minute_ts": int(time.time())}
    body = {"src": prefix, "method": "NotifyFullStatus", "params": {"ts": time.time(), "pm1:0": component}}
    return json.dumps(body, separators=(",", ":"))


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def mem_mib(pid: int, key: str) -> float:
    """`VmRSS` or `VmHWM` (peak) of `pid`, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Observer:
    """A C subscriber (`mosquitto_sub -F '%U %p'`, its own process) stamping each HA state's arrival."""

    def __init__(self, broker: Mosquitto, topic: str, out: Path) -> None:
        self.out = out
        self.broker = broker
        self.topic = topic
        self.read_pos = 0
        self.arrivals: list[tuple[float, bytes]] = []

    def __enter__(self) -> Observer:
        cmd = [
            "mosquitto_sub",
            *("-h", self.broker.host, "-p", str(self.broker.port), "-u", "observer"),
            *("-P", self.broker.password("observer"), "-t", self.topic, "-q", "0", "-F", "%U %p", "--nodelay"),
        ]
        self.file = self.out.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.file)
        time.sleep(0.5)  # subscribed (the warm-up waits for states anyway)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)
        self.file.close()

    def poll(self) -> int:
        """Read what the subscriber has written since the last call; the number of arrivals."""
        with self.out.open("rb") as f:
            f.seek(self.read_pos)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self.read_pos += cut
        for line in data[:cut].splitlines():
            stamp, _, payload = line.partition(b" ")
            self.arrivals.append((float(stamp), payload))
        return len(self.arrivals)

    def seqs(self, since: int = 0) -> list[tuple[float, int]]:
        """(arrival time, sequence number) of every state with a `power` since index `since`."""
        self.poll()
        out = []
        for arrived, payload in self.arrivals[since:]:
            try:
                body = json.loads(payload)
                power = body["params"]["pm1:0"]["apower"] if "params" in body else body.get("power")
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(power, (int, float)):
                out.append((arrived, int(power)))
        return out


class Publishers:
    """One `mosquitto_pub -l` per device, fed lines through a pipe (or a file)."""

    def __init__(self, broker: Mosquitto, files: dict[str, Path] | None = None) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for n, prefix in enumerate(DEVICES):
            cmd = [
                "mosquitto_pub",
                *("-h", broker.host, "-p", str(broker.port), "-u", "bench", "-P", broker.password("bench")),
                *("-i", f"pub-{n}-{secrets.token_hex(3)}", "-q", "0", "-t", f"{prefix}/events/rpc", "-l"),
            ]
            stdin: Any = files[prefix].open("rb") if files else subprocess.PIPE
            self.procs[prefix] = subprocess.Popen(cmd, stdin=stdin)

    def send(self, prefix: str, line: str) -> None:
        pipe = self.procs[prefix].stdin
        assert pipe is not None
        pipe.write(line.encode() + b"\n")
        pipe.flush()

    def close(self, timeout: float = 300) -> None:
        for proc in self.procs.values():
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs.values():
            proc.wait(timeout)


def landed(vm: Victoria, site: str, expected: int, timeout: float = 60) -> int:
    """`shelly_power` samples of `site` in VictoriaMetrics, once `expected` or stable for 5 s."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sample_count(vm.export_now(f'shelly_power{{site="{site}"}}'))
        if count >= expected:
            return count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > 5:
            return count
        time.sleep(0.5)
    return last


def wait_quiet(obs: Observer, quiet: float = 2.0, timeout: float = 120) -> None:
    """Until no state has arrived for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    count, since = obs.poll(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if obs.poll() != count:
            count, since = len(obs.arrivals), time.monotonic()
        elif time.monotonic() - since > quiet:
            return


# -- the systems under test -----------------------------------------------------------------


class System:
    """A process that takes the Shelly messages and writes HA state + InfluxDB points."""

    name = ""
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)


class BridgeSystem(System):
    """`meter-bridge run` with a `shelly` source, the HA sink and the InfluxDB sink."""

    name = "meter-bridge"

    def __init__(self, work: Path, broker: Mosquitto, vm: Victoria, site: str, exe: Path | None = None) -> None:
        config = {
            "site": {"id": site},
            "mqtt": {"host": broker.host, "port": broker.port, "username": "bridge", "password": "${MQTT_PASSWORD}"},
            "homeassistant": {"min_interval_s": 0},
            "health": {"enabled": False},
            "logging": {"level": "WARNING"},
            "influx": {"url": vm.url, "token": "${INFLUX_TOKEN}", "replication_poll_s": 0},
            "spool": {"path": str(work / "spool.sqlite")},
            "sources": [{"type": "shelly", "id": "sh", "devices": [{"prefix": p, "relays": False} for p in DEVICES]}],
        }
        path = work / "bridge.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        env = {**os.environ, "MQTT_PASSWORD": broker.password("bridge"), "INFLUX_TOKEN": "bench"}
        exe = exe or Path(sys.executable).with_name("meter-bridge")
        self.log = (work / "bridge.log").open("ab")
        self.proc = subprocess.Popen(
            [str(exe), "run", "--config", str(path)], env=env, stdout=self.log, stderr=self.log
        )


FUNCTION = r"""
let m;
try { m = JSON.parse(msg.payload); } catch (e) { node.warn("bad JSON on " + msg.topic); return null; }
if (!m || (m.method !== "NotifyStatus" && m.method !== "NotifyFullStatus") || typeof m.params !== "object") return null;
const dev = msg.topic.slice(0, msg.topic.indexOf("/"));
const now = new Date();
for (const key of Object.keys(m.params)) {
  const c = m.params[key];
  if (!/^(switch|pm1|em1):\d+$/.test(key) || typeof c !== "object" || c === null) continue;
  const f = {};
  if (typeof c.apower === "number") f.power = c.apower;
  if (typeof c.voltage === "number") f.voltage = c.voltage;
  if (typeof c.current === "number") f.current = c.current;
  if (typeof c.freq === "number") f.frequency = c.freq;
  if (c.aenergy && typeof c.aenergy.total === "number") f.energy_import = c.aenergy.total / 1000;
  if (c.ret_aenergy && typeof c.ret_aenergy.total === "number") f.energy_export = c.ret_aenergy.total / 1000;
  if (Object.keys(f).length === 0) continue;
  const meter = "sh_" + dev.replace(/[^a-z0-9]+/g, "_") + (c.id ? "_" + c.id : "");
  const state = Object.assign(context.get(meter) || {}, f);
  context.set(meter, state);
  node.send([
    {payload: {measurement: "shelly", tags: {site: SITE, meter: meter, source: meter}, fields: f, timestamp: now}},
    {topic: "hems/meter/" + meter, payload: JSON.stringify(Object.assign({}, state, {ts: now.toISOString()}))},
  ]);
}
return null;
"""


class NodeRedSystem(System):
    """Node-RED 4 with the equivalent batched flow (see the module docstring)."""

    name = "Node-RED"

    def __init__(self, work: Path, broker: Mosquitto, vm: Victoria, site: str) -> None:
        user_dir = work / "nodered"
        user_dir.mkdir()
        self.port = free_port()
        (user_dir / "settings.js").write_text(
            "module.exports = {\n"
            f"  uiHost: '127.0.0.1', uiPort: {self.port}, userDir: {json.dumps(str(user_dir))},\n"
            "  flowFile: 'flows.json', credentialSecret: false,\n"
            "  logging: {console: {level: 'warn', metrics: false, audit: false}},\n"
            "  editorTheme: {projects: {enabled: false}}, telemetry: {enabled: false}, diagnostics: {enabled: false},\n"
            "};\n"
        )
        flows = [
            {"id": "tab", "type": "tab", "label": "bench"},
            {
                "id": "broker",
                "type": "mqtt-broker",
                "name": "mosquitto",
                "broker": broker.host,
                "port": str(broker.port),
                "clientid": f"nodered-{secrets.token_hex(3)}",
                "autoConnect": True,
                "usetls": False,
                "protocolVersion": "4",
                "keepalive": "60",
                "cleansession": True,
            },
            {
                "id": "in",
                "type": "mqtt in",
                "z": "tab",
                "topic": "+/events/rpc",
                "qos": "1",
                "datatype": "utf8",
                "broker": "broker",
                "nl": False,
                "rap": True,
                "rh": 0,
                "inputs": 0,
                "wires": [["fn"]],
            },
            {
                "id": "fn",
                "type": "function",
                "z": "tab",
                "name": "parse NotifyStatus",
                "func": FUNCTION.replace("SITE", json.dumps(site)),
                "outputs": 2,
                "wires": [["join"], ["out"]],
            },
            {
                "id": "join",
                "type": "join",
                "z": "tab",
                "mode": "custom",
                "build": "array",
                "property": "payload",
                "propertyType": "msg",
                "key": "topic",
                "joiner": "\\n",
                "joinerType": "str",
                "accumulate": False,
                "timeout": "1",
                "count": "100",
                "reduceRight": False,
                "wires": [["batch"]],
            },
            {
                "id": "influx",
                "type": "influxdb",
                "hostname": "127.0.0.1",
                "port": "8086",
                "protocol": "http",
                "database": "meters",
                "name": "victoria",
                "usetls": False,
                "influxdbVersion": "2.0",
                "url": vm.url,
                "rejectUnauthorized": False,
            },
            {
                "id": "batch",
                "type": "influxdb batch",
                "z": "tab",
                "influxdb": "influx",
                "precision": "",
                "retentionPolicy": "",
                "name": "",
                "database": "",
                "precisionV18FluxV20": "ms",
                "retentionPolicyV18Flux": "",
                "org": "hems",
                "bucket": "meters",
                "wires": [],
            },
            {
                "id": "out",
                "type": "mqtt out",
                "z": "tab",
                "topic": "",
                "qos": "0",
                "retain": "true",
                "broker": "broker",
            },
        ]
        for n, node in enumerate(flows):
            if node["id"] == "out":
                node["broker"] = "broker"
            if "z" in node:  # Node-RED tells flow nodes from config nodes by their position
                node.update(x=100 + 150 * n, y=100)
        (user_dir / "flows.json").write_text(json.dumps(flows, indent=1))
        creds = {"broker": {"user": "nodered", "password": broker.password("nodered")}, "influx": {"token": "bench"}}
        (user_dir / "flows_cred.json").write_text(json.dumps(creds))
        red = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"
        self.log = (work / "nodered.log").open("ab")
        cmd = ["node", str(red), "--settings", str(user_dir / "settings.js"), "--userDir", str(user_dir)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        wait_for_port(self.port, timeout=60)


def ensure_node_red() -> bool:
    """Install Node-RED and the InfluxDB nodes into `.cache/bench-nodered` (once)."""
    if (NODE_RED_DIR / "node_modules" / "node-red-contrib-influxdb").is_dir():
        return True
    if shutil.which("npm") is None:
        return False
    NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
    print(f"installing {' '.join(NODE_RED_PACKAGES)} into {NODE_RED_DIR} ...", file=sys.stderr)
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(NODE_RED_DIR)]
    return subprocess.run([*cmd, *NODE_RED_PACKAGES], check=False).returncode == 0


# -- one run --------------------------------------------------------------------------------


def warm_up(system: System, broker: Mosquitto, obs: Observer) -> None:
    """Full status of every device until a state of each is seen (the system is connected)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if system.proc.poll() is not None:
            log = Path(system.log.name).read_text()[-2000:]
            raise RuntimeError(f"{system.name} exited with {system.proc.returncode}: {log}")
        pubs = Publishers(broker)
        for prefix in DEVICES:
            pubs.send(prefix, full_status(prefix))
        pubs.close()
        time.sleep(1.0)
        if obs.poll() >= len(DEVICES):
            wait_quiet(obs, quiet=1.0)
            return
    raise RuntimeError(f"{system.name}: no state within 60 s")


def paced(pubs: Publishers, rate: float, seconds: float, seq0: int) -> dict[int, float]:
    """Send `rate` msg/s round-robin over the devices; the send time of every sequence number."""
    sent: dict[int, float] = {}
    total = int(rate * seconds)
    start = time.time()
    for n in range(total):
        due = start + n / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        seq = seq0 + n
        now = time.time()
        pubs.send(DEVICES[n % len(DEVICES)], notify(DEVICES[n % len(DEVICES)], seq, now))
        sent[seq] = now
    return sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def one_run(
    kind: str, run: int, work: Path, broker: Mosquitto, vm: Victoria, args: argparse.Namespace
) -> dict[str, Any]:
    site = f"{kind}_{run}_{secrets.token_hex(2)}"
    work = work / site
    work.mkdir()
    system: System
    if kind == "bridge":
        system = BridgeSystem(work, broker, vm, site)
    elif kind == "before":  # another build of the bridge (`--before`), measured in the same run
        system = BridgeSystem(work, broker, vm, site, exe=Path(args.before))
        system.name = "meter-bridge (before)"
    else:
        system = NodeRedSystem(work, broker, vm, site)
    result: dict[str, Any] = {"system": system.name, "run": run}
    try:
        with Observer(broker, "hems/meter/+", work / "states.txt") as obs:
            warm_up(system, broker, obs)
            base = landed(vm, site, len(DEVICES))  # the warm-up's full statuses (sent until all were seen)
            pid = system.proc.pid
            result["idle_rss_mib"] = mem_mib(pid, "VmRSS")
            # paced
            mark = obs.poll()
            pubs = Publishers(broker)
            seq0 = 1_000
            spy = py_spy(args, kind, pid, f"paced-{run}")
            cpu0 = cpu_s(pid)
            sent = paced(pubs, args.rate, args.seconds, seq0)
            pubs.close()
            wait_quiet(obs)
            stop_py_spy(spy)
            result["paced_cpu_s_per_10k"] = (cpu_s(pid) - cpu0) / len(sent) * 10_000
            result["paced_peak_rss_mib"] = mem_mib(pid, "VmHWM")
            result["paced_sent"] = len(sent)
            result.update(latency_stats(sent, obs.seqs(mark)))
            result["paced_landed"] = landed(vm, site, base + len(sent)) - base
            # burst: pre-written files, then every publisher at once
            seq0 = 1_000_000
            files: dict[str, Path] = {}
            per_device = args.burst // len(DEVICES)
            for d, prefix in enumerate(DEVICES):
                path = work / f"burst-{d}.txt"
                now = time.time()
                lines = (notify(prefix, seq0 + d * per_device + i, now) for i in range(per_device))
                path.write_text("\n".join(lines) + "\n")
                files[prefix] = path
            mark = obs.poll()
            spy = py_spy(args, kind, pid, f"burst-{run}")
            cpu0 = cpu_s(pid)
            t0 = time.time()
            Publishers(broker, files).close()
            t_sent = time.time()
            wait_quiet(obs, quiet=3.0)
            arrivals = obs.seqs(mark)
            t_last = max((a for a, _ in arrivals), default=t_sent)
            result["burst_cpu_s"] = cpu_s(pid) - cpu0
            stop_py_spy(spy)
            before = base + result["paced_landed"]
            got = landed(vm, site, before + per_device * len(DEVICES)) - before
            result["burst_sent"] = per_device * len(DEVICES)
            result["burst_landed"] = got
            result["burst_publish_s"] = t_sent - t0
            result["burst_s"] = t_last - t0
            result["burst_msg_per_s"] = got / (t_last - t0)
            result["burst_cpu_s_per_10k"] = result["burst_cpu_s"] / max(got, 1) * 10_000
            result["peak_rss_mib"] = mem_mib(pid, "VmHWM")
            result["end_rss_mib"] = mem_mib(pid, "VmRSS")
            result["alive"] = system.proc.poll() is None
    finally:
        system.stop()
    return result


def py_spy(args: argparse.Namespace, kind: str, pid: int, phase: str) -> subprocess.Popen[bytes] | None:
    """With `--profile`, py-spy records the bridge (raw collapsed stacks) until `stop_py_spy`."""
    if not args.profile or kind != "bridge":
        return None
    out = Path(args.profile) / f"bridge-{phase}.txt"
    spy_cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "-r", "200"]
    spy = subprocess.Popen([*spy_cmd, "-f", "raw", "-o", str(out), "-p", str(pid)])
    time.sleep(1.0)
    return spy


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def latency_stats(sent: dict[int, float], seen: list[tuple[float, int]]) -> dict[str, float]:
    """p50/p99/max latency (ms) of the first arrival of each sent sequence number."""
    first_seen: dict[int, float] = {}
    for arrived, seq in seen:
        first_seen.setdefault(seq, arrived)
    lat = [(first_seen[s] - t) * 1000 for s, t in sent.items() if s in first_seen]
    return {
        "matched": len(lat),
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": max(lat, default=float("nan")),
        "over_10ms": sum(1 for v in lat if v > 10),
    }


def floor(work: Path, broker: Mosquitto, args: argparse.Namespace) -> dict[str, Any]:
    """The measurement's own floor: the paced pass straight from the publishers to the subscriber."""
    with Observer(broker, "+/events/rpc", work / "floor.txt") as obs:
        pubs = Publishers(broker)
        sent = paced(pubs, args.rate, args.seconds, 1_000)
        pubs.close()
        wait_quiet(obs, quiet=1.0)
        return latency_stats(sent, obs.seqs())


def ceiling(work: Path, broker: Mosquitto, count: int) -> dict[str, Any]:
    """Mosquitto alone: `mosquitto_pub -l` -> broker -> `mosquitto_sub`, ~250-byte payload, QoS 0."""
    path = work / "ceiling.txt"
    line = notify(DEVICES[0], 123456, time.time())
    path.write_text((line + "\n") * count)
    auth = ("-h", broker.host, "-p", str(broker.port))
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            *auth,
            "-u",
            "observer",
            "-P",
            broker.password("observer"),
            "-t",
            "bench/ceiling",
            "-C",
            str(count),
            "-q",
            "0",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    assert broker.process is not None
    cpu0 = cpu_s(broker.process.pid)
    t0 = time.time()
    with path.open("rb") as lines:
        subprocess.run(
            ["mosquitto_pub", *auth, "-u", "bench", "-P", broker.password("bench"), "-t", "bench/ceiling", "-l"],
            stdin=lines,
            check=True,
        )
    try:
        sub.wait(120)
        received = count
    except subprocess.TimeoutExpired:
        sub.kill()
        received = -1
    elapsed = time.time() - t0
    return {
        "payload_bytes": len(line),
        "sent": count,
        "received_all": received == count,
        "msg_per_s": count / elapsed,
        "broker_cpu_s_per_10k": (cpu_s(broker.process.pid) - cpu0) / count * 10_000,
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median over the runs (numbers) or the values (others)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        if all(isinstance(v, dict) for v in values):
            out[key] = median_of(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = statistics.median(values)
        else:
            out[key] = values if len(set(map(str, values))) > 1 else values[0]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=100_000)
    parser.add_argument("--systems", default="bridge,nodered,ceiling")
    parser.add_argument("--profile", help="folder: py-spy record the bridge during each burst (collapsed stacks)")
    parser.add_argument(
        "--broker-queue",
        type=int,
        default=1_000_000,
        help="Mosquitto max_queued_messages (its default 1000 drops QoS 0 for a subscriber that lags a burst)",
    )
    parser.add_argument(
        "--before",
        metavar="EXE",
        help="another build's `meter-bridge` executable, run as system `before` next to `bridge` (before/after)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) and print its path")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    systems = args.systems.split(",")
    if args.before and "before" not in systems:
        systems.insert(systems.index("bridge") + 1 if "bridge" in systems else 0, "before")
    if "nodered" in systems and not ensure_node_red():
        print("Node-RED could not be installed: skipped", file=sys.stderr)
        systems.remove("nodered")
    when = time.strftime("%Y-%m-%d %H:%M")
    results: dict[str, Any] = {"when": when, "load_before": os.getloadavg(), "args": vars(args), "runs": {}}
    tmp = tempfile.mkdtemp(prefix="bench-ingest-")
    if args.keep:
        print(f"work folder: {tmp}", file=sys.stderr)
    try:
        work = Path(tmp)
        users = {u: secrets.token_urlsafe(12) for u in ("bridge", "observer", "nodered", "bench")}
        broker = Mosquitto(work / "mosquitto", users=users)
        with broker.config_file.open("a") as conf:
            conf.write(f"max_queued_messages {args.broker_queue}\n")
        vm = Victoria(work / "vm")
        broker.start()
        vm.start()
        try:
            for run in range(1, args.runs + 1):
                for kind in systems:  # interleaved, so a change of machine load hits both alike
                    load = os.getloadavg()[0]
                    if kind == "ceiling":
                        row = ceiling(work, broker, args.burst)
                        row["floor"] = floor(work, broker, args)
                    else:
                        row = one_run(kind, run, work, broker, vm, args)
                    row["load1"] = load
                    print(json.dumps({kind: row}), flush=True)
                    results["runs"].setdefault(kind, []).append(row)
        finally:
            vm.stop()
            broker.stop()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    results["median"] = {kind: median_of(rows) for kind, rows in results["runs"].items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results["median"], indent=1))
    if not args.no_report:
        write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
