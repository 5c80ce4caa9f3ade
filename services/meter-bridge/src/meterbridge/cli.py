"""`meter-bridge` command line: run, check-config, status, config-reference, watch, shelly, import, influx,
pge keygen, duke login."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .config import DEFAULT_CONFIG_PATH, load_config
from .errors import ConfigError

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_CONFIG = 2


def _cmd_run(args: argparse.Namespace) -> int:
    from .app import Bridge
    from .logutil import setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.logging.level, config.logging.format)
    asyncio.run(Bridge(config).run())
    return EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.config}: OK ({len(config.sources)} sources)")
    return EXIT_OK


def _health_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    # A healthcheck runs with the container's environment, not the entrypoint's: secrets the
    # entrypoint read from files (MQTT_PASSWORD) are missing and the config does not load, so the
    # port the image's default config uses comes from its variable.
    host, port = "127.0.0.1", int(os.environ.get("BRIDGE_HEALTH_PORT") or 8099)
    if args.config.exists():
        try:
            health = load_config(args.config).health
            host = "127.0.0.1" if health.host in ("0.0.0.0", "::") else health.host  # noqa: S104
            port = health.port
        except ConfigError:
            pass
    return f"http://{host}:{port}/healthz"


def _cmd_status(args: argparse.Namespace) -> int:
    url = _health_url(args)
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310 - local URL
            report = json.load(response)
    except urllib.error.HTTPError as err:  # 503 still carries the report
        report = json.load(err)
    except (OSError, ValueError) as err:
        print(f"meter-bridge is not answering at {url}: {err}", file=sys.stderr)
        return EXIT_UNHEALTHY
    if args.live:
        # The container's healthcheck: an answer (200 or 503) proves the bridge's event loop runs.
        # A missing or stale meter is not a reason to restart the bridge (balenaEngine restarts
        # unhealthy containers): it shows in HA (meter availability), /metrics and this report.
        stale = [source_id for source_id, source in report["sources"].items() if not source["healthy"]]
        print(f"meter-bridge {report['version']} is running" + (f"; stale: {', '.join(stale)}" if stale else ""))
        return EXIT_OK
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"meter-bridge {report['version']}, up {report['uptime_s']:.0f} s: "
            f"{'healthy' if report['healthy'] else 'UNHEALTHY'}"
        )
        print(f"{'source':<20} {'type':<12} {'last reading':>13} {'readings':>9} {'errors':>7}  state")
        for source_id, source in report["sources"].items():
            age = source["last_reading_age_s"]
            age_text = "never" if age is None else f"{age:.0f} s ago"
            errors = sum(source["errors"].values())
            state = "ok" if source["healthy"] else "STALE"
            if source.get("found_by_default") and not source["meters"]:
                state = "looking (found by default)"
            print(f"{source_id:<20} {source['type']:<12} {age_text:>13} {source['readings']:>9} {errors:>7}  {state}")
        roles = report.get("roles") or {}
        if roles:
            print(f"{'meter':<32} {'type':<12} {'role':<11} name")
            for meter_id, meter in roles.items():
                print(f"{meter_id:<32} {meter['type'] or '-':<12} {meter['role'] or '-':<11} {meter['name'] or ''}")
        for name, sink in report["sinks"].items():
            state = {True: "connected", False: "DISCONNECTED", None: "-"}[sink["connected"]]
            print(
                f"sink {name:<15} {state:<12} received {sink['received']} dropped {sink['dropped']} "
                f"queued {sink['queued']}"
            )
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


def _cmd_config_reference(_args: argparse.Namespace) -> int:
    from .docs import config_reference

    print(config_reference())
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    from .watch import watch

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return EXIT_CONFIG
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(config, seconds=args.seconds, ha_url=args.ha_url))
    return EXIT_OK


def _cmd_kasa_new_plug(_args: argparse.Namespace) -> int:
    from .sinks.kasa.config import random_device_id, random_mac

    print(f"mac: {random_mac()}")
    print(f"device_id: {random_device_id()}")
    return EXIT_OK


def _cmd_shelly_provision(args: argparse.Namespace) -> int:
    from .sources.shelly.provision import run_provision

    return run_provision(args)


def _cmd_pge_keygen(args: argparse.Namespace) -> int:
    from .sources.green_button.credentials import run_keygen

    return run_keygen(args)


def _cmd_duke_login(args: argparse.Namespace) -> int:
    from .sources.duke_login import run_login

    return run_login(args)


def _cmd_shelly_scan(args: argparse.Namespace) -> int:
    from .sources.shelly.fleet import run_scan

    return run_scan(args)


def _cmd_shelly_update(args: argparse.Namespace) -> int:
    from .sources.shelly.update import run_update

    return run_update(args)


def _cmd_shelly_logs(args: argparse.Namespace) -> int:
    from .sources.shelly.debuglog import run_logs

    return run_logs(args)


def _cmd_import_green_button(args: argparse.Namespace) -> int:
    from .app import history_sinks
    from .errors import AuthError, ParseError, SinkError
    from .sources.green_button.importer import import_summary, parse_file, progress_printer
    from .statistics import HaStatisticsClient

    try:
        summary = parse_file(args.file, progress_printer())
    except (ParseError, OSError) as err:
        print(f"{args.file}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(summary.describe())
    if args.dry_run:
        print("dry run: nothing written")
        return EXIT_OK
    config = None
    if args.config is not None:
        try:
            config = load_config(args.config)
        except ConfigError as err:
            print("\n".join(err.problems), file=sys.stderr)
            return EXIT_CONFIG
    sinks = history_sinks(config)
    token = os.environ.get("HA_TOKEN", "")
    if not token and not sinks:
        print(
            "nothing to write to: set HA_TOKEN (a long-lived admin token of Home Assistant) "
            "and/or give --config with an influx section",
            file=sys.stderr,
        )
        return EXIT_CONFIG

    async def run() -> int:
        meter, name = args.meter, args.name or args.meter
        if token:
            async with HaStatisticsClient(args.ha_url, token) as client:
                result = await import_summary(summary, meter, name, client, sinks)
        else:
            print("HA_TOKEN is not set: Home Assistant statistics skipped", file=sys.stderr)
            result = await import_summary(summary, meter, name, None, sinks)
        for sid, rows in result.rows_written.items():
            print(f"{sid}: {rows} hours written")
        if sinks:
            print(f"influx: {result.readings_sent} readings written")
        return EXIT_OK

    try:
        return asyncio.run(run())
    except (AuthError, SinkError) as err:
        print(f"import failed: {err}", file=sys.stderr)
        return EXIT_UNHEALTHY


#: The release's default bridge config (the meter-bridge image copies it here).
_PACKAGED_CONFIG = Path("/usr/share/hems/bridge-config.yaml")
_MINIMAL_CONFIG = """mqtt:
  host: "${MQTT_HOST:-127.0.0.1}"
  username: bridge
  password: "${MQTT_PASSWORD}"
sources: []
"""


def _cmd_import_senselink(args: argparse.Namespace) -> int:
    import re

    import yaml

    from .config import validate_data
    from .senselink import convert, merge
    from .yamlsource import format_path, load_yaml

    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        print(f"{args.file}: cannot read: {err}", file=sys.stderr)
        return EXIT_CONFIG
    loaded = load_yaml(text, {})
    if loaded.data is None:
        print("\n".join(f"{args.file}:{p.line}: {p.reason}" for p in loaded.problems), file=sys.stderr)
        return EXIT_CONFIG
    conversion = convert(loaded)
    base_path = args.into or (_PACKAGED_CONFIG if _PACKAGED_CONFIG.exists() else None)
    try:
        base_text = base_path.read_text(encoding="utf-8") if base_path else _MINIMAL_CONFIG
    except OSError as err:
        print(f"{base_path}: cannot read: {err}", file=sys.stderr)
        return EXIT_CONFIG
    merged = merge(yaml.safe_load(base_text) or {}, conversion)
    output = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    # The result must be a valid config: check it with placeholders for the variables it names.
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", output))
    _, problems = validate_data(load_yaml(output, {name: "placeholder-value" for name in names}))
    header = [f"# converted from SenseLink's {args.file.name} by `meter-bridge import senselink`"]
    header += [f"# TODO: {note}" for note in conversion.notes]
    header += [f"# {args.file.name} {skipped}" for skipped in conversion.skipped]
    print("\n".join(header))
    print(output, end="")
    for note in conversion.notes:
        print(f"to do: {note}", file=sys.stderr)
    for skipped in conversion.skipped:
        print(f"{args.file}:{skipped.line}: {skipped.key}: {skipped.verdict}: {skipped.reason}", file=sys.stderr)
    if problems:
        print("the converted config is not valid:", file=sys.stderr)
        print("\n".join(f"  line {p.line}: {format_path(p.path)}: {p.reason}" for p in problems), file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _cmd_influx_provision(args: argparse.Namespace) -> int:
    import time

    from .backoff import Backoff
    from .influx_provision import ProvisionError, ProvisionSettings, provision

    # `--every S` keeps reconciling (the release runs it as a service with restart: always);
    # a failure is retried with backoff instead of exiting into a restart loop.
    backoff = Backoff(initial=5.0, maximum=300.0)
    while True:
        try:
            report = provision(ProvisionSettings.from_env())
        except ProvisionError as err:
            print(f"influx provision: {err}", file=sys.stderr, flush=True)
            if args.every is None:
                return EXIT_UNHEALTHY
            time.sleep(backoff.next_delay())
            continue
        for change in report.changes or ["nothing to change"]:
            print(f"influx provision: {change}", flush=True)
        if args.every is None:
            return EXIT_OK
        backoff.reset()
        time.sleep(args.every)


def _cmd_flex_report(args: argparse.Namespace) -> int:
    from .flex.report import settle_from_files, summary_lines, write_event_files

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return EXIT_CONFIG
    flex = config.flex
    try:
        report = settle_from_files(flex, args.ledger, args.log, args.event or ())
        for problem in report.problems:
            print(f"flex report: skipped {problem}", file=sys.stderr)
        out_dir = args.out or flex.report_dir
        written = write_event_files(report.deliveries, out_dir, config.site.id)
    except OSError as err:
        print(f"flex report: {err}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print("\n".join(summary_lines(report.deliveries)))
    print(f"{len(report.deliveries)} event(s); {len(written)} file(s) in {out_dir}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `meter-bridge` (sub-commands register here)."""
    parser = argparse.ArgumentParser(prog="meter-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            type=Path,
            # the image sets BRIDGE_CONFIG_FILE: the healthcheck's `status --live` finds the same file
            default=Path(os.environ.get("BRIDGE_CONFIG_FILE") or DEFAULT_CONFIG_PATH),
            help=f"configuration file (default $BRIDGE_CONFIG_FILE, else {DEFAULT_CONFIG_PATH})",
        )
        return p

    with_config(sub.add_parser("run", help="run the bridge")).set_defaults(func=_cmd_run)
    with_config(sub.add_parser("check-config", help="validate a configuration file")).set_defaults(
        func=_cmd_check_config
    )
    status = with_config(sub.add_parser("status", help="health of a running bridge (exit 1 when unhealthy)"))
    status.add_argument("--url", help="health endpoint (default from the config, else 127.0.0.1:8099)")
    status.add_argument("--json", action="store_true", help="print the raw report")
    status.add_argument(
        "--live",
        action="store_true",
        help="liveness only (the container healthcheck): exit 0 while the bridge answers, stale meters or not",
    )
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(func=_cmd_status)
    sub.add_parser("config-reference", help="print the configuration reference (Markdown)").set_defaults(
        func=_cmd_config_reference
    )
    watch = with_config(sub.add_parser("watch", help="live view of the meters' states on MQTT"))
    watch.add_argument("--seconds", type=float, default=None, help="stop after this long")
    watch.add_argument(
        "--ha-url", default=None, help="Home Assistant's web address: its status line says when it does not answer"
    )
    watch.set_defaults(func=_cmd_watch)
    kasa = sub.add_parser("kasa", help="emulated Kasa plugs").add_subparsers(dest="kasa_command", required=True)
    kasa.add_parser(
        "new-plug", help="print a random locally administered MAC and a device id for a new plug"
    ).set_defaults(func=_cmd_kasa_new_plug)
    shelly = sub.add_parser("shelly", help="Shelly devices").add_subparsers(dest="shelly_command", required=True)
    provision = with_config(
        shelly.add_parser("provision", help="point Shelly devices at the broker over HTTP RPC (idempotent)")
    )
    from .sources.shelly.provision import add_arguments

    add_arguments(provision)
    provision.set_defaults(func=_cmd_shelly_provision)
    from .sources.shelly import debuglog, fleet, update

    scan = with_config(shelly.add_parser("scan", help="list the Gen2+ devices on the LAN (mDNS, address range)"))
    fleet.add_scan_arguments(scan)
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.add_argument("--identities", type=Path, help="directory of the devices' MQTT identities")
    scan.add_argument("--no-broker", action="store_true", help="do not ask the broker which devices are online")
    scan.set_defaults(func=_cmd_shelly_scan)
    shelly_update = with_config(shelly.add_parser("update", help="staged firmware update with a report (idempotent)"))
    update.add_arguments(shelly_update)
    shelly_update.set_defaults(func=_cmd_shelly_update)
    logs = with_config(shelly.add_parser("logs", help="collect a device's debug log, then turn it off again"))
    debuglog.add_arguments(logs)
    logs.set_defaults(func=_cmd_shelly_logs)
    from .sources.duke_login import add_arguments as duke_login_arguments
    from .sources.green_button.credentials import add_arguments as keygen_arguments

    pge = sub.add_parser("pge", help="PG&E Share My Data").add_subparsers(dest="pge_command", required=True)
    keygen = pge.add_parser("keygen", help="make the client key (0600) and the certificate request PG&E's CA needs")
    keygen_arguments(keygen)
    keygen.set_defaults(func=_cmd_pge_keygen)
    duke = sub.add_parser("duke", help="Duke Energy").add_subparsers(dest="duke_command", required=True)
    duke_login = duke.add_parser("login", help="log in once in a browser and get the refresh token")
    duke_login_arguments(duke_login)
    duke_login.set_defaults(func=_cmd_duke_login)
    imports = sub.add_parser("import", help="import utility data").add_subparsers(dest="kind", required=True)
    green = imports.add_parser("green-button", help="import a Green Button (ESPI) XML file")
    green.add_argument("file", type=Path, help="ESPI XML file (Download My Data)")
    green.add_argument("--dry-run", action="store_true", help="print a summary, write nothing")
    green.add_argument(
        "--config",
        type=Path,
        default=None,
        help="bridge configuration; its `influx` section (if any) receives the hourly totals",
    )
    green.add_argument("--meter", default="utility", help="meter id of the statistics (default utility)")
    green.add_argument("--name", default=None, help="name shown in Home Assistant (default: the meter id)")
    green.add_argument(
        "--ha-url",
        # or: balena.yml declares HA_URL empty
        default=os.environ.get("HA_URL") or "http://127.0.0.1:8123",
        help="Home Assistant base URL (default $HA_URL or http://127.0.0.1:8123); token from $HA_TOKEN",
    )
    green.set_defaults(func=_cmd_import_green_button)
    senselink = imports.add_parser(
        "senselink",
        help="print a SenseLink config converted to ours (merged into --into), naming every line left behind",
    )
    senselink.add_argument("file", type=Path, help="SenseLink's YAML config")
    senselink.add_argument(
        "--into",
        type=Path,
        default=None,
        help="bridge config to add the sources and plugs to (default: the release's default config)",
    )
    senselink.set_defaults(func=_cmd_import_senselink)
    influx = sub.add_parser("influx", help="InfluxDB helpers").add_subparsers(dest="influx_command", required=True)
    influx_provision = influx.add_parser(
        "provision", help="reconcile buckets, task, tokens and edge replication from INFLUX_* variables"
    )
    influx_provision.add_argument(
        "--every", type=float, default=None, metavar="S", help="keep running: reconcile again every S seconds"
    )
    # accepted for the container entrypoint, which passes --config to every command
    influx_provision.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)
    influx_provision.set_defaults(func=_cmd_influx_provision)
    flex = sub.add_parser("flex", help="demand response").add_subparsers(dest="flex_command", required=True)
    flex_report = with_config(
        flex.add_parser("report", help="delivered energy per event by each baseline method (CSV + JSON per event)")
    )
    flex_report.add_argument("--ledger", type=Path, default=None, help="half-hour ledger (default from the config)")
    flex_report.add_argument("--log", type=Path, default=None, help="flex decision log (default from the config)")
    flex_report.add_argument("--out", type=Path, default=None, help="directory for the files (default from the config)")
    flex_report.add_argument("--event", action="append", help="only this event id (repeatable)")
    flex_report.set_defaults(func=_cmd_flex_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `meter-bridge` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
