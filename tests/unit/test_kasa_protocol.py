"""The pure Kasa protocol: cipher, framing, request -> response (fixtures + properties)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kasa.transports.xortransport import XorEncryption

from meterbridge.errors import ParseError
from meterbridge.sinks.kasa.protocol import (
    FrameDecoder,
    PlugSnapshot,
    decrypt,
    encrypt,
    frame,
    parse_request,
    respond,
    respond_bytes,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kasa"
#: The plug every fixture's expected response was produced for.
PLUG = PlugSnapshot(
    alias="Heat pump",
    mac="52:C7:BF:00:00:01",
    device_id="0123456789ABCDEF0123456789ABCDEF01234567",
    hw_id="0123456789ABCDEF0123456789ABCDEF",
    power_w=2345.6,
    voltage_v=231.2,
    current_a=10.145,
    total_kwh=1234.567,
    on_time_s=3600,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize("request_file", sorted(FIXTURES.glob("*.request.json")), ids=lambda p: p.name)
def test_fixture_requests_get_their_expected_response(request_file: Path) -> None:
    expected = json.loads(request_file.with_name(request_file.name.replace(".request", ".response")).read_text())
    response = respond_bytes(request_file.read_bytes(), PLUG)
    assert response.payload == expected["payload"]
    assert response.refused == expected["refused"]


def test_sense_poll_carries_both_field_name_sets() -> None:
    realtime = respond({"emeter": {"get_realtime": {}}}, PLUG).payload["emeter"]["get_realtime"]
    assert (realtime["power"], realtime["power_mw"]) == (2345.6, 2345600)
    assert (realtime["voltage"], realtime["voltage_mv"]) == (231.2, 231200)
    assert (realtime["current"], realtime["current_ma"]) == (10.145, 10145)
    assert (realtime["total"], realtime["total_wh"]) == (1234.567, 1234567)


def test_unknown_module_and_control_commands() -> None:
    response = respond({"smartlife.iot.dimmer": {"get_dimmer_parameters": {}}, "system": {"reset": {}}}, PLUG)
    assert response.payload["smartlife.iot.dimmer"]["err_code"] == -1
    assert response.payload["system"]["reset"]["err_code"] == -2
    assert response.refused == ["system.reset"]


@given(st.text(max_size=300))
def test_cipher_and_framing_match_python_kasa(text: str) -> None:
    # python-kasa's XorEncryption.encrypt adds the TCP length prefix (our `frame`).
    assert frame(text.encode()) == XorEncryption.encrypt(text)
    assert XorEncryption.decrypt(encrypt(text.encode())) == text
    assert decrypt(encrypt(text.encode())) == text.encode()


@given(st.lists(st.binary(max_size=200), max_size=5), st.data())
def test_frames_decode_the_same_however_the_stream_is_cut(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:end])
    assert out == messages
    assert decoder.pending == 0


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_parse_error(data: bytes) -> None:
    decoder = FrameDecoder(max_bytes=256)
    try:
        for message in decoder.feed(data):
            respond_bytes(message, PLUG)
    except ParseError:
        pass
    with contextlib.suppress(ParseError):
        respond_bytes(decrypt(data), PLUG)


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_json_object_gets_an_answer_for_every_module(request: dict[str, object]) -> None:
    response = respond(request, PLUG)
    assert set(response.payload) == set(request) - {"context"}
    json.dumps(response.payload)  # always serialisable


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(ParseError):
        FrameDecoder(max_bytes=100).feed(b"\x00\x01\x00\x00")
    with pytest.raises(ParseError):
        parse_request(b"[1, 2]")
