"""ONVIF WS-Discovery over real UDP sockets on loopback, against a FAKE camera's discovery
service (tests/fake_onvif_device.py): unicast and multicast probes, duplicates merged,
hostile replies counted and ignored, and ``citygw onvif discover`` as the operator sees it."""

from __future__ import annotations

import argparse
import socket
from urllib.parse import quote

import pytest
from fake_onvif_device import FakeDiscoveryResponder, onvif_scopes, probe_matches
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.sources.onvif_discovery import (
    MAX_REPLY_BYTES,
    MULTICAST_GROUP,
    DiscoveryError,
    ReplyRejected,
    discover,
    parse_probe_matches,
    parse_target,
)
from gateway.cli_onvif import register

TIMEOUT_S = 0.4  # loopback answers in well under a millisecond
GATE = dict(
    endpoint="urn:uuid:5a1c0c2e-0000-4000-8000-00000000a001",
    name="Wusi Road Gate",
    hardware="DS-2CD2T47G2",
    locations=["city/fuzhou", "street/wusi-road"],
    xaddrs=["http://169.254.10.2/onvif/device_service",
            "http://127.0.0.1:8080/onvif/device_service"],
)  # fmt: skip
NVT = "dn:NetworkVideoTransmitter tds:Device"


def _join_loopback_group() -> str | None:
    """Why multicast on loopback cannot be tested here, or None when it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            membership = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton("127.0.0.1")
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as err:
            return f"this sandbox cannot join {MULTICAST_GROUP} on loopback: {err}"
    return None


def test_unicast_probe_finds_the_camera_once_with_its_names_and_config_url():
    with FakeDiscoveryResponder(**GATE) as camera:
        result = discover(f"127.0.0.1:{camera.port}", TIMEOUT_S)
    assert len(camera.probes) == 2  # sent twice, as UDP may lose one
    assert result.replies == 2 and not result.rejected
    [found] = result.cameras  # both answers merged by endpoint address
    assert (found.endpoint, found.replied_from) == (GATE["endpoint"], "127.0.0.1")
    assert (found.name, found.hardware) == ("Wusi Road Gate", "DS-2CD2T47G2")
    assert found.location == "city/fuzhou, street/wusi-road"
    assert found.xaddrs == tuple(GATE["xaddrs"])
    assert found.types == ("dn:NetworkVideoTransmitter", "tds:Device")
    # the XAddr on the address that answered, not the link-local one listed first
    assert found.onvif_url() == "onvif://USER:PASSWORD@127.0.0.1:8080"
    assert found.onvif_url("admin", "p@ss:w") == "onvif://admin:p%40ss%3Aw@127.0.0.1:8080"


@pytest.mark.skipif(_join_loopback_group() is not None, reason=str(_join_loopback_group()))
def test_multicast_probe_finds_every_camera_in_the_group():
    other = dict(GATE, endpoint="urn:uuid:other", name="Market", xaddrs=["http://127.0.0.1/x"])
    with (
        FakeDiscoveryResponder(**GATE, multicast_group=MULTICAST_GROUP) as first,
        FakeDiscoveryResponder(**other, multicast_group=MULTICAST_GROUP, port=first.port),
    ):
        result = discover(f"{MULTICAST_GROUP}:{first.port}", TIMEOUT_S, interface="127.0.0.1")
    assert result.replies == 4 and not result.rejected
    assert sorted((c.endpoint, c.name) for c in result.cameras) == [
        ("urn:uuid:5a1c0c2e-0000-4000-8000-00000000a001", "Wusi Road Gate"),
        ("urn:uuid:other", "Market"),
    ]
    market = next(c for c in result.cameras if c.name == "Market")
    assert market.onvif_url() == "onvif://USER:PASSWORD@127.0.0.1"


LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(2, 10)).replace(
        "&lol1;", "&lol;"
    )
    + "]><lolz>&lol9;</lolz>"
).encode()
EXTERNAL = b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><e>&x;</e>'
HOSTILE = {
    "too_large": lambda mid: b"<" + b"x" * (MAX_REPLY_BYTES + 100),
    "malformed": lambda mid: b"<s:Envelope xmlns:s='urn:s'><s:Header>",
    "dtd": lambda mid: LAUGHS,
    "dtd_external": lambda mid: EXTERNAL,
    "unrelated": lambda mid: probe_matches("uuid:someone-else", "urn:uuid:x", [], [], NVT),
    "not_soap": lambda mid: b"<html><body>hello</body></html>",
    "not_probe_matches": lambda mid: probe_matches(mid, "urn:uuid:x", [], [], NVT).replace(
        b"ProbeMatches>", b"Hello>"
    ),
    "no_endpoint": lambda mid: probe_matches(mid, "", [], [], NVT),
    "garbage": lambda mid: bytes(range(256)),
}


def test_hostile_replies_are_counted_and_the_camera_still_found():
    with FakeDiscoveryResponder(**GATE, hostile=list(HOSTILE.values())) as camera:
        result = discover(f"127.0.0.1:{camera.port}", TIMEOUT_S)
    assert [c.endpoint for c in result.cameras] == [GATE["endpoint"]]
    assert result.replies == 2 * (len(HOSTILE) + 1)
    assert result.rejected == {
        "too_large": 2, "malformed": 4, "dtd": 4, "unrelated": 2, "not_soap": 2,
        "not_probe_matches": 2, "no_endpoint": 2,
    }  # fmt: skip


def test_nobody_answering_is_an_empty_result_after_the_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        result = discover(f"127.0.0.1:{silent.getsockname()[1]}", 0.2)
    assert (result.cameras, result.replies, dict(result.rejected)) == ([], 0, {})


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("camera.local", "target: 'camera.local' is not an IPv4 address[:port]"),
        ("10.0.0.7:0", "target: port '0' is not in 1..65535"),
        ("10.0.0.7:http", "target: port 'http' is not in 1..65535"),
        ("::1", "target: '::1' is not an IPv4 address[:port]"),
    ],
)
def test_bad_targets_are_refused_naming_the_parameter(target, message):
    with pytest.raises(DiscoveryError) as info:
        parse_target(target)
    assert str(info.value) == message


def test_bad_timeout_and_interface_are_refused_naming_the_parameter():
    with pytest.raises(DiscoveryError, match=r"^timeout: 0 s is not in 0.05..30$"):
        discover("127.0.0.1:9", 0)
    with pytest.raises(DiscoveryError, match=r"^interface: 'eth0' is not an IPv4 address$"):
        discover(MULTICAST_GROUP, 0.1, interface="eth0")
    assert parse_target("239.255.255.250") == (MULTICAST_GROUP, 3702)


# The reply parser: anything from the network.


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | st.text(max_size=512).map(str.encode))
def test_any_reply_is_parsed_or_rejected_with_a_reason(data):
    try:
        cameras = parse_probe_matches(data, "uuid:ours", "10.0.0.9")
    except ReplyRejected as rejected:
        assert rejected.reason in {
            "too_large", "malformed", "dtd", "unrelated", "not_soap", "not_probe_matches",
            "no_endpoint", "no_probe_match",
        }  # fmt: skip
    else:
        assert cameras


printable = st.characters(blacklist_categories=("Cs", "Cc"))


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(printable, max_size=40),
    hardware=st.text(printable, max_size=40),
    location=st.text(printable, min_size=1, max_size=40),
    port=st.integers(1, 65535),
)
def test_names_and_addresses_come_back_as_the_camera_sent_them(name, hardware, location, port):
    xaddr = f"http://192.168.1.64:{port}/onvif/device_service"
    reply = probe_matches(
        "uuid:ours", "urn:uuid:cam", onvif_scopes(name, hardware, [location]), [xaddr], NVT
    )
    [camera] = parse_probe_matches(reply, "uuid:ours", "192.168.1.64")
    assert (camera.name, camera.hardware, camera.location) == (name, hardware, location)
    expected = "192.168.1.64" if port == 80 else f"192.168.1.64:{port}"
    assert camera.onvif_url("u", "p") == f"onvif://u:p@{expected}"
    assert camera.scopes[1] == f"onvif://www.onvif.org/name/{quote(name)}"


# The command line.


@pytest.fixture
def citygw(capsys):
    """citygw(*argv) -> (exit code, stdout, stderr) of `citygw onvif ARGV`."""
    parser = argparse.ArgumentParser(prog="citygw")
    register(parser.add_subparsers(required=True))

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            args = parser.parse_args(["onvif", *argv])
            code = args.handler(args)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_discover_prints_each_camera_and_its_config_url(citygw):
    with FakeDiscoveryResponder(**GATE, hostile=[HOSTILE["unrelated"]]) as camera:
        code, out, err = citygw("discover", "--target", f"127.0.0.1:{camera.port}",
                                "--timeout", str(TIMEOUT_S))  # fmt: skip
    assert (code, err) == (0, "")
    assert out.split("\n") == [
        f"1 ONVIF camera(s) answered 127.0.0.1:{camera.port} within 0.4 s",
        "",
        "  address   127.0.0.1",
        "  name      Wusi Road Gate",
        "  hardware  DS-2CD2T47G2",
        "  location  city/fuzhou, street/wusi-road",
        "  endpoint  urn:uuid:5a1c0c2e-0000-4000-8000-00000000a001",
        "  xaddrs    http://169.254.10.2/onvif/device_service "
        "http://127.0.0.1:8080/onvif/device_service",
        "  config    url: onvif://USER:PASSWORD@127.0.0.1:8080",
        "",
        "replies refused: unrelated 2",
        "",
        "Put the camera's user and password in place of USER:PASSWORD; add /N for its "
        "media profile N (default 0).",
        "",
    ]


def test_discover_with_no_answer_exits_1_and_bad_arguments_exit_2(citygw):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        code, out, err = citygw("discover", "--target", f"127.0.0.1:{port}", "--timeout", "0.1")
    assert (code, err) == (1, "")
    assert out == f"0 ONVIF camera(s) answered 127.0.0.1:{port} within 0.1 s\n"
    code, out, err = citygw("discover", "--target", "cam.local")
    assert code == 2
    assert "argument --target: 'cam.local' is not an IPv4 address[:port]" in err
    code, out, err = citygw("discover", "--timeout", "nan")
    assert code == 2 and "argument --timeout: nan s is not in 0.05..30" in err
