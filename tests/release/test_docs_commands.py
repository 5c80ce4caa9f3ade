"""Every command the README and docs/ tell an operator to run exists, with the flags they give it.

- `balena ...` against the command manifest (`oclif.manifest.json`) of the balena-cli release
  scripts/setup.sh packs into .cache (`BALENA_CLI_VERSION` there; nothing is installed). balena-cli
  23 dropped the old aliases (`env add`, `ssh`, `tunnel`, `logs`): a doc giving one fails here with
  its file and line.
- `meter-bridge ...` against the bridge's own argparse parser (`meterbridge.cli.build_parser`).
- `mosquitto_sub ...`/`mosquitto_pub ...` (run in the mqtt container) against the usage synopsis
  their `--help` prints. These are Debian's clients (2.0.11), older than the image's Mosquitto
  (2.0.20): a flag added since would fail here wrongly, never pass wrongly (2.0.x removed none).

Not checked, because their command lists cannot be read here: `influx` (InfluxDB's CLI is in no
registry this machine reaches) and `balena-engine` (balenaOS's engine, only on a device); nor the
general tools (`curl`, `jq`, `cat`). The parser is tests/helpers/doc_commands.py; the self-tests
below feed it the commands the docs used to give.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.doc_commands import (
    CommandTable,
    argparse_table,
    balena_table,
    check,
    doc_commands,
    markdown_files,
    usage_table,
)
from helpers.release import REPO
from meterbridge.cli import build_parser


def _balena_cli_version() -> str:
    match = re.search(r"^BALENA_CLI_VERSION=(\d+\.\d+\.\d+)$", (REPO / "scripts" / "setup.sh").read_text(), re.M)
    assert match, "scripts/setup.sh pins the balena-cli release the docs are checked against"
    return match.group(1)


@pytest.fixture(scope="module")
def balena() -> CommandTable:
    version = _balena_cli_version()
    manifest = REPO / ".cache" / f"balena-cli-{version}" / "oclif.manifest.json"
    if not manifest.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm not installed: the balena-cli manifest cannot be fetched (make setup)")
        pytest.fail(f"{manifest} is missing: run make setup")
    data = json.loads(manifest.read_text())
    assert data["version"] == version
    return balena_table(data, f"balena-cli {version}")


@pytest.fixture(scope="module")
def meter_bridge() -> CommandTable:
    return argparse_table(build_parser(), "meter-bridge", "meter-bridge's CLI (meterbridge/cli.py)")


@pytest.fixture(scope="module", params=["mosquitto_sub", "mosquitto_pub"])
def mosquitto_client(request: pytest.FixtureRequest) -> CommandTable:
    tool: str = request.param
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: make setup installs mosquitto-clients")
    # both print their help on stdout and exit 1
    result = subprocess.run([tool, "--help"], capture_output=True, text=True, check=False, timeout=30)
    version = re.search(r"version (\S+)", result.stdout)
    assert version, result.stdout
    return usage_table(result.stdout, tool, f"{tool} {version.group(1)} --help")


def _problems(table: CommandTable) -> tuple[int, list[str]]:
    found = 0
    problems: list[str] = []
    for path in markdown_files(REPO):
        for command in doc_commands(str(path.relative_to(REPO)), path.read_text(), table.tool):
            found += 1
            problems.extend(check(command, table))
    return found, problems


def test_every_balena_command_in_the_docs_exists(balena: CommandTable) -> None:
    found, problems = _problems(balena)
    assert not problems, "\n".join(problems)
    assert found >= 30, f"only {found} balena commands found: is the extractor still reading the docs?"


def test_every_meter_bridge_command_in_the_docs_exists(meter_bridge: CommandTable) -> None:
    found, problems = _problems(meter_bridge)
    assert not problems, "\n".join(problems)
    assert found >= 30, f"only {found} meter-bridge commands found"


def test_every_mosquitto_client_command_in_the_docs_exists(mosquitto_client: CommandTable) -> None:
    found, problems = _problems(mosquitto_client)
    assert not problems, "\n".join(problems)
    assert found >= 1
    assert _check_doc(f"`{mosquitto_client.tool} -h localhost -q 1 -t 'hems/#'`", mosquitto_client) == []
    (problem,) = _check_doc(f"`{mosquitto_client.tool} --verbose -t x`", mosquitto_client)
    assert "has no flag --verbose" in problem


def _check_doc(text: str, table: CommandTable) -> list[str]:
    commands = doc_commands("doc.md", text, table.tool)
    assert commands, f"no {table.tool} command found in {text!r}"
    return [problem for command in commands for problem in check(command, table)]


REFUSED_BALENA = [
    # the commands the docs gave before balena-cli 23 dropped the aliases
    ("```sh\nbalena env add MQTT_BRIDGE_PASSWORD '<12+ chars>' --fleet hems --service mqtt\n```", "balena env add"),
    ("Shell: `balena ssh <uuid> <service>`.", "balena ssh"),
    ("`balena tunnel <uuid> -p 443:8443`", "balena tunnel"),
    ("`balena logs <uuid> --tail --service meter-bridge`", "balena logs"),
    ('```sh\nfor uuid in $(cat homes.txt); do\n  echo "$run" | balena ssh "$uuid" > r.json\ndone\n```', "balena ssh"),
    ("```\nx=$(balena ssh abc)\n```", "balena ssh"),
    # flags the command does not have, or used wrongly
    ("`balena env set A b --fleet hems --services mqtt`", "no flag --services"),
    ("`balena env set A b --fleet`", "--fleet needs a value"),
    ("`balena device logs abc --tail=yes`", "--tail takes no value"),
    ("`balena device ssh abc -x`", "no flag -x"),
    ("`balena device ssh abc meter-bridge extra`", "takes at most 2 argument(s)"),
    ("`balena fleet create hems --type\nraspberrypi4-64 --org x`", "no flag --org"),
]


@pytest.mark.parametrize(("text", "reason"), REFUSED_BALENA)
def test_the_checker_refuses_what_balena_cli_refuses(balena: CommandTable, text: str, reason: str) -> None:
    problems = _check_doc("intro\n\n" + text, balena)
    assert len(problems) == 1, problems
    line = 3 + text[: text.index("balena")].count("\n")
    assert problems[0].startswith(f"doc.md:{line}: `"), "the problem names the doc's file and line"
    assert reason in problems[0]


ACCEPTED_BALENA = [
    "```sh\nbalena env set MQTT_BRIDGE_PASSWORD '<12+ chars>' --fleet hems --service mqtt\n```",
    '`balena env set TLS_CERT "$(cat fullchain.pem)" -d <uuid> -s nginx`',
    "`balena env set A b --fleet=hems`",
    "`balena device tunnel <uuid> -p 443:8443 -p 8080:80`",
    "`balena device logs <uuid> --tail --service meter-bridge`",
    '```sh\necho "$run" | balena device ssh "$uuid" > "report-$uuid.json"\n```',
    "```sh\nbalena fleet create hems \\\n  --type raspberrypi4-64\n```",
    "`balena device ssh`",  # named in prose without its arguments
    "`balena preload balena.img --fleet hems --no-pin-device-to-release`",  # allowNo
]


@pytest.mark.parametrize("text", ACCEPTED_BALENA)
def test_the_checker_accepts_what_balena_cli_accepts(balena: CommandTable, text: str) -> None:
    assert _check_doc(text, balena) == []


def test_the_table_reads_aliases_char_flags_and_negations() -> None:
    """Manifest features the pinned release uses little or not at all, on a made-up manifest of the
    same shape: command aliases, flag aliases and char aliases, `allowNo`, `strict: false`."""
    manifest = {
        "commands": {
            "env:set": {
                "aliases": ["env:add"],
                "hiddenAliases": ["envs:set"],
                "args": {"name": {}, "value": {}},
                "strict": False,
                "flags": {
                    "fleet": {"type": "option", "char": "f", "aliases": ["application"], "charAliases": ["a"]},
                    "pin": {"type": "boolean", "allowNo": True},
                },
            }
        }
    }
    table = balena_table(manifest, "a made-up manifest")
    accepted = "`balena env add A b c d --application x -a y --fleet=z -fw --pin --no-pin`"
    assert _check_doc(accepted, table) == []
    assert _check_doc("`balena envs set A --no-fleet x`", table)[0].endswith(
        "has no flag --no-fleet in a made-up manifest"
    )


def test_the_checker_reads_meter_bridge_from_its_parser(meter_bridge: CommandTable) -> None:
    assert _check_doc("`meter-bridge shelly provision 10.0.0.2 --all-found --mqtt-server h:1883`", meter_bridge) == []
    assert _check_doc("`meter-bridge import green-button FILE [--dry-run] [--meter ID]`", meter_bridge) == []
    assert _check_doc("`SHELLY_ADMIN_PASSWORD=x meter-bridge shelly update --report json`", meter_bridge) == []
    assert _check_doc("`meter-bridge shelly provison`", meter_bridge) == [
        "doc.md:1: `meter-bridge shelly provison`: `meter-bridge shelly provison` is not a command of "
        "meter-bridge's CLI (meterbridge/cli.py)"
    ]
    (problem,) = _check_doc("```sh\nmeter-bridge status --live --verbose\n```", meter_bridge)
    assert "has no flag --verbose" in problem
    (problem,) = _check_doc("`meter-bridge import green-button a.xml b.xml`", meter_bridge)
    assert "takes at most 1 argument(s)" in problem


def test_only_shell_code_and_inline_commands_are_read(balena: CommandTable) -> None:
    text = "```yaml\ncommand: balena ssh x\n```\nThe `balena` CLI; `echo balena ssh` is not run.\n"
    assert doc_commands("doc.md", text, "balena") == []


def test_every_doc_is_read() -> None:
    names = {path.relative_to(REPO).as_posix() for path in markdown_files(REPO)}
    assert {"README.md", "docs/deploy.md", "docs/operations.md"} <= names
    assert all(Path(REPO / name).exists() for name in names)
