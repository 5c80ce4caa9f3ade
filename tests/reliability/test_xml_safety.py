"""XML safety of the two XML parsers (ESPI via defusedxml's SAX, EMU-2's own fragment scanner):
entity expansion (billion laughs, quadratic blow-up), external entities (XXE reading a local
file) and external DTDs are refused or inert: nothing expands, nothing is read, nothing fetched."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from helpers.figures import record as record_figure
from meterbridge.errors import ParseError
from meterbridge.model import Reading
from meterbridge.sources.emu2.parser import Emu2Parser
from meterbridge.sources.green_button.espi import parse_bytes

SECRET = "xxe-canary-4f1c"

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<feed xmlns="http://www.w3.org/2005/Atom"><title>&lol9;</title></feed>"""
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE q [<!ENTITY a "' + b"A" * 50_000 + b'">]><feed>' + b"&a;" * 50_000 + b"</feed>"
)


def xxe(path: Path) -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY xxe SYSTEM "file://{path}">]>'
        '<feed xmlns="http://www.w3.org/2005/Atom"><title>&xxe;</title></feed>'
    ).encode()


def external_dtd(path: Path) -> bytes:
    return f'<?xml version="1.0"?><!DOCTYPE feed SYSTEM "file://{path}"><feed><title>x</title></feed>'.encode()


def attacks(tmp_path: Path) -> dict[str, bytes]:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY leak "{SECRET}">')
    return {
        "billion laughs": LAUGHS,
        "quadratic blow-up": QUADRATIC,
        "XXE file read": xxe(secret),
        "external DTD": external_dtd(dtd),
        "parameter entity": (
            f'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY % p SYSTEM "file://{dtd}"> %p;]>'
            "<feed><title>&leak;</title></feed>"
        ).encode(),
    }


def test_espi_refuses_entities_and_dtds(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    outcomes = []
    for name, document in attacks(tmp_path).items():
        tracemalloc.start()
        began = time.monotonic()
        with pytest.raises(ParseError) as err:
            parse_bytes(document)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert SECRET not in str(err.value)
        assert peak < 8 * 1024 * 1024, f"{name}: {peak} bytes"
        outcomes.append(f"{name}: refused in {1000 * (time.monotonic() - began):.0f} ms, peak {peak // 1024} KiB")
    record_figure(
        "xml_espi",
        area="Fuzzing",
        check="ESPI XML: billion laughs, quadratic blow-up, XXE file read, external DTD, parameter entity",
        goal="refused (ParseError), nothing expanded or read",
        measured="; ".join(outcomes),
        ok=True,
        test=request.node.nodeid,
    )


def test_emu2_never_expands_or_reads(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The EMU-2 scanner has no DTD or entity support at all: the attacks are inert text.

    A DTD inside the stream is skipped as garbage; an entity reference in a field is not a
    hex number and is reported as garbled; the canary never shows up in any event.
    """
    outcomes = []
    demand = (
        b"<InstantaneousDemand><DeviceMacId>0xd8d5b90000001a2b</DeviceMacId>"
        b"<MeterMacId>0x00078100011a4c66</MeterMacId><TimeStamp>0x25117e9f</TimeStamp>"
        b"<Demand>&xxe;</Demand><Multiplier>0x01</Multiplier><Divisor>0x03e8</Divisor>"
        b"<DigitsRight>0x03</DigitsRight><DigitsLeft>0x0f</DigitsLeft>"
        b"<SuppressLeadingZero>Y</SuppressLeadingZero></InstantaneousDemand>\r\n"
    )
    for name, document in attacks(tmp_path).items():
        parser = Emu2Parser("grid")
        tracemalloc.start()
        events = parser.feed(document + demand)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert SECRET not in repr(events)
        assert not any(isinstance(e, Reading) for e in events), f"{name}: an entity became a value"
        assert peak < 8 * 1024 * 1024
        outcomes.append(f"{name}: inert, peak {peak // 1024} KiB")
    record_figure(
        "xml_emu2",
        area="Fuzzing",
        check="EMU-2 XML stream: the same attacks, then a fragment whose value is an entity reference",
        goal="nothing expanded, nothing read, no value from an entity",
        measured="; ".join(outcomes),
        ok=True,
        test=request.node.nodeid,
    )
