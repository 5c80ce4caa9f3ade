"""The zigbee2mqtt entrypoint's coordinator table, made from zigbee-herdsman's own.

    python3 scripts/zigbee_coordinators.py           # exit 1 and a diff when the table differs
    python3 scripts/zigbee_coordinators.py --write   # rewrite the table in hems-entrypoint.sh

herdsman's USB fingerprints (dist/adapter/adapterDiscovery.js of the version the pinned
Zigbee2MQTT depends on; scripts/setup.sh packs it into .cache) are read by running the module
(scripts/herdsman_usb_fingerprints.js) and written as lines the POSIX-sh entrypoint can match:
`adapter;vendor id;product id;manufacturer;by-id pattern;serial options`, in herdsman's order (its
scoring keeps the first of equal matches). The patterns are JavaScript regular expressions; the
entrypoint matches with `grep -Ei`, so each is turned into the POSIX ERE that matches the same
strings. Only the constructs herdsman uses are turned (`.`, `.*`, `\\.`, literal characters and a
negative lookahead of a literal, `(?!_v2_)`); anything else stops this script, so a new construct
upstream is looked at rather than mistranslated.

The table is generated into the script and committed, not generated at image build. A `RUN node ...`
step would work on balena's classic Docker builder too, but the zigbee2mqtt image cannot be built
here, so that step and the image's node_modules layout it relies on would run first on balena's
builder, untested; committed, the device runs exactly the table the tests ran, and a herdsman
change arrives as a reviewed diff (the test fails until it is taken).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "services" / "zigbee2mqtt" / "hems-entrypoint.sh"
DOCKERFILE = REPO / "services" / "zigbee2mqtt" / "Dockerfile"
READER = Path(__file__).with_name("herdsman_usb_fingerprints.js")
TABLE = re.compile(r"^COORDINATORS='\n(?P<lines>.*?)^'$", re.M | re.S)
# herdsman's option names -> Zigbee2MQTT's `serial:` settings (settings.schema.json)
OPTION_SETTINGS = {"rtscts": "rtscts", "baudRate": "baudrate"}
_LITERAL = re.compile(r"[A-Za-z0-9_+-]")


def herdsman_dir() -> Path:
    """Where scripts/setup.sh put the herdsman package of the pinned Zigbee2MQTT."""
    match = re.search(r"^FROM koenkk/zigbee2mqtt:(\d+\.\d+\.\d+)$", DOCKERFILE.read_text(), re.M)
    if match is None:
        raise SystemExit(f"{DOCKERFILE}: no pinned koenkk/zigbee2mqtt version")
    return REPO / ".cache" / f"zigbee-herdsman-for-zigbee2mqtt-{match.group(1)}" / "package"


def herdsman_fingerprints(package: Path) -> dict[str, list[dict[str, Any]]]:
    """herdsman's USB_FINGERPRINTS, adapter type -> entries, in its order."""
    out = subprocess.run(
        ["node", str(READER), str(package), "table"], capture_output=True, text=True, check=True
    ).stdout
    table: dict[str, list[dict[str, Any]]] = json.loads(out)
    return table


def _either_case(char: str) -> str:
    return char if char.lower() == char.upper() else char.lower() + char.upper()


def ere(js_regex: str) -> str:
    """The POSIX ERE (used with `grep -Ei`) matching what the JavaScript regex (flag i) matches."""
    out = []
    i = 0
    while i < len(js_regex):
        if js_regex.startswith("(?!", i):
            end = js_regex.index(")", i)
            literal = js_regex[i + 3 : end]
            if not literal or not all(_LITERAL.fullmatch(char) for char in literal):
                raise ValueError(f"{js_regex!r}: only a lookahead of literal characters is translated")
            # "not followed by L": at some k < len(L) the text ends or differs from L[k]
            branches = [f"{literal[:k]}($|[^{_either_case(literal[k])}])" for k in range(len(literal))]
            out.append("(" + "|".join(branches) + ")")
            i = end + 1
        elif js_regex[i] == "\\" and js_regex[i + 1 : i + 2] == ".":
            out.append("\\.")
            i += 2
        elif js_regex[i] in ".*" or _LITERAL.fullmatch(js_regex[i]):
            out.append(js_regex[i])
            i += 1
        else:
            raise ValueError(f"{js_regex!r}: {js_regex[i]!r} at {i} is not translated; look at it")
    return "".join(out)


def table_lines(fingerprints: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The entrypoint's table: one line per herdsman fingerprint, in herdsman's order."""
    lines = []
    for adapter, entries in fingerprints.items():
        for entry in entries:
            fields = [adapter, entry["vendorId"].lower(), entry["productId"].lower(), entry.get("manufacturer", "")]
            if ";" in "".join(fields):
                raise ValueError(f"{entry}: a field contains the separator `;`")
            options = " ".join(
                f"{OPTION_SETTINGS[name]}={json.dumps(value)}" for name, value in (entry.get("options") or {}).items()
            )
            lines.append(";".join([*fields, ere(entry["pathRegex"]) if entry.get("pathRegex") else "", options]))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the table in hems-entrypoint.sh")
    args = parser.parse_args()
    wanted = "\n".join(table_lines(herdsman_fingerprints(herdsman_dir()))) + "\n"
    text = ENTRYPOINT.read_text()
    match = TABLE.search(text)
    if match is None:
        raise SystemExit(f"{ENTRYPOINT}: no COORDINATORS='...' table")
    if match.group("lines") == wanted:
        return 0
    if args.write:
        ENTRYPOINT.write_text(text[: match.start("lines")] + wanted + text[match.end("lines") :])
        print(f"{ENTRYPOINT.relative_to(REPO)}: coordinator table rewritten from zigbee-herdsman")
        return 0
    diff = difflib.unified_diff(
        match.group("lines").splitlines(), wanted.splitlines(), "hems-entrypoint.sh", "zigbee-herdsman", lineterm=""
    )
    print("\n".join(diff))
    return 1


if __name__ == "__main__":
    sys.exit(main())
