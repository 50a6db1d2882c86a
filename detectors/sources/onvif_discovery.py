"""ONVIF WS-Discovery: find the cameras on the local network segment.

An ONVIF camera answers a WS-Discovery ``Probe`` (SOAP over UDP, multicast to
239.255.255.250:3702) for ``NetworkVideoTransmitter`` with a ``ProbeMatch``: its endpoint
address (a stable ``urn:uuid``), its device service addresses (XAddrs) and its scopes
(name, hardware, location). That is how an operator finds the ``onvif://`` address to put
in the config instead of reading IPs off stickers.

Replies come from anything on the segment, so each one is treated as hostile: read up to
``MAX_REPLY_BYTES``, parsed with DTDs refused (no entity expansion, no external entities:
SOAP forbids DTDs anyway), kept only when it answers *our* probe's message id, with every
list and string bounded. A reply that fails any of these is counted by reason in
``DiscoveryResult.rejected``, never raised. One camera answering several times (we send
the probe twice, as UDP may lose one; a camera may answer per interface) is one camera,
merged by endpoint address.

The target is the multicast group by default; a unicast ``host[:port]`` probes one address,
for segments whose switches filter multicast, and for tests.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pyexpat import ExpatError, ParserCreate
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MULTICAST_GROUP = "239.255.255.250"
WS_DISCOVERY_PORT = 3702
MAX_REPLY_BYTES = 32 * 1024  # a real ProbeMatches is 1–4 KiB
MAX_DEVICES = 256
MAX_ITEMS = 32  # XAddrs, scopes or types kept per camera
MAX_TEXT_CHARS = 1024  # one XAddr, scope or address
MAX_TIMEOUT_S = 30.0
PROBE_REPEATS = 2
PROBE_GAP_S = 0.1

_NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "dn": "http://www.onvif.org/ver10/network/wsdl",
}
_PROBE_ACTION = _NS["d"] + "/Probe"
_PROBE_MATCHES = "ProbeMatches"
_SCOPE_PREFIX = "onvif://www.onvif.org/"


class DiscoveryError(ValueError):
    """A discovery parameter is wrong; the message names it."""


class ReplyRejected(Exception):
    """A reply is not a usable ProbeMatches for our probe; ``reason`` is its counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DiscoveredCamera:
    """One camera that answered: what the operator needs to configure it."""

    endpoint: str  # its WS-Addressing endpoint, e.g. urn:uuid:…; stable across IP changes
    replied_from: str  # the IP address the reply came from
    xaddrs: tuple[str, ...]  # device service URLs (http://host[:port]/onvif/device_service)
    scopes: tuple[str, ...]
    types: tuple[str, ...]

    @property
    def name(self) -> str:
        return next(iter(_scope_values(self.scopes, "name")), "")

    @property
    def hardware(self) -> str:
        return next(iter(_scope_values(self.scopes, "hardware")), "")

    @property
    def location(self) -> str:
        """All location scopes, e.g. ``city/fuzhou, street/wusi-road``."""
        return ", ".join(_scope_values(self.scopes, "location"))

    def onvif_url(self, user: str = "USER", password: str = "PASSWORD") -> str | None:
        """The config's ``onvif://user:pass@host[:port]`` for this camera; None without an
        http(s) XAddr. An XAddr on the address that answered is preferred: cameras also
        list link-local and other-interface addresses the gateway may not reach."""
        usable = [urlsplit(x) for x in self.xaddrs]
        usable = [x for x in usable if x.scheme in ("http", "https") and x.hostname]
        if not usable:
            return None
        best = next((x for x in usable if x.hostname == self.replied_from), usable[0])
        host = f"[{best.hostname}]" if ":" in (best.hostname or "") else best.hostname
        port = best.port or (443 if best.scheme == "https" else 80)
        credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return f"onvif://{credentials}{host}{'' if port == 80 else f':{port}'}"


@dataclass(slots=True)
class DiscoveryResult:
    """The cameras found (in order of first answer) and the replies refused, by reason."""

    target: tuple[str, int]
    timeout_s: float
    cameras: list[DiscoveredCamera] = field(default_factory=list)
    replies: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def parse_target(text: str) -> tuple[str, int]:
    """``239.255.255.250`` or ``192.168.1.64:3702`` → (IPv4 address, port)."""
    host, _, port_text = text.strip().partition(":")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise DiscoveryError(f"target: {text!r} is not an IPv4 address[:port]") from None
    port = WS_DISCOVERY_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise DiscoveryError(f"target: port {port_text!r} is not in 1..65535")
        port = int(port_text)
    return str(address), port


def probe_message(message_id: str) -> bytes:
    """A WS-Discovery Probe for ONVIF NetworkVideoTransmitters (ONVIF Core §7.3)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{_NS["s"]}" xmlns:a="{_NS["a"]}" xmlns:d="{_NS["d"]}" '
        f'xmlns:dn="{_NS["dn"]}"><s:Header>'
        f'<a:Action s:mustUnderstand="1">{_PROBE_ACTION}</a:Action>'
        f"<a:MessageID>{message_id}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{_NS['a']}/role/anonymous</a:Address></a:ReplyTo>"
        '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>'
        "</s:Header><s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types>"
        "</d:Probe></s:Body></s:Envelope>"
    ).encode()


def parse_probe_matches(data: bytes, message_id: str, replied_from: str) -> list[DiscoveredCamera]:
    """The cameras in one reply to the probe ``message_id``; raises ``ReplyRejected``.

    Elements are matched by local name, as vendors bind the discovery and addressing
    namespaces under varying prefixes (and some use the WS-Discovery 1.1 ones).
    """
    if len(data) > MAX_REPLY_BYTES:
        raise ReplyRejected("too_large")
    envelope = parse_untrusted_xml(data)
    if _local(envelope.tag) != "Envelope":
        raise ReplyRejected("not_soap")
    header = _child(envelope, "Header")
    body = _child(envelope, "Body")
    if header is None or body is None:
        raise ReplyRejected("not_soap")
    relates_to = _child(header, "RelatesTo")
    if relates_to is None or (relates_to.text or "").strip() != message_id:
        raise ReplyRejected("unrelated")
    matches = _child(body, _PROBE_MATCHES)
    if matches is None:
        raise ReplyRejected("not_probe_matches")
    cameras = []
    for match in matches:
        if _local(match.tag) != "ProbeMatch":
            continue
        if len(cameras) == MAX_DEVICES:
            break
        address = _text(_child(_child(match, "EndpointReference"), "Address"))
        if not address:
            raise ReplyRejected("no_endpoint")
        cameras.append(
            DiscoveredCamera(
                endpoint=address[:MAX_TEXT_CHARS],
                replied_from=replied_from,
                xaddrs=_words(_child(match, "XAddrs")),
                scopes=_words(_child(match, "Scopes")),
                types=_words(_child(match, "Types")),
            )
        )
    if not cameras:
        raise ReplyRejected("no_probe_match")
    return cameras


def discover(
    target: str = MULTICAST_GROUP,
    timeout_s: float = 3.0,
    interface: str | None = None,
) -> DiscoveryResult:
    """Probes ``target`` and collects the answers that arrive within ``timeout_s``.

    ``interface`` is the local IPv4 address whose segment a multicast probe goes out on
    (the system's default route otherwise). The multicast TTL is 1: the local segment.
    """
    host, port = parse_target(target)
    if not 0.05 <= timeout_s <= MAX_TIMEOUT_S:
        raise DiscoveryError(f"timeout: {timeout_s!r} s is not in 0.05..{MAX_TIMEOUT_S:g}")
    message_id = f"uuid:{uuid.uuid4()}"
    result = DiscoveryResult(target=(host, port), timeout_s=timeout_s)
    by_endpoint: dict[str, DiscoveredCamera] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _prepare(sock, host, interface)
        probe = probe_message(message_id)
        deadline = time.monotonic() + timeout_s
        sends = [time.monotonic() + i * PROBE_GAP_S for i in range(PROBE_REPEATS)]
        while (now := time.monotonic()) < deadline:
            while sends and sends[0] <= now:
                sends.pop(0)
                sock.sendto(probe, (host, port))
            wait_s = min(deadline, sends[0] if sends else deadline) - now
            if not select.select([sock], [], [], max(0.0, wait_s))[0]:
                continue
            data, (sender, _) = sock.recvfrom(MAX_REPLY_BYTES + 1)
            result.replies += 1
            try:
                found = parse_probe_matches(data, message_id, sender)
            except ReplyRejected as rejected:
                result.rejected[rejected.reason] += 1
                continue
            for camera in found:
                _merge(by_endpoint, camera, result.rejected)
    result.cameras = list(by_endpoint.values())
    return result


def parse_untrusted_xml(data: bytes) -> ET.Element:
    """Parses XML from the network with any DTD refused: no internal entities to expand
    (billion laughs), no external entities to fetch. Raises ``ReplyRejected``."""
    builder = ET.TreeBuilder()
    parser = ParserCreate(namespace_separator="}")

    def refuse(*_args: Any) -> None:
        raise ReplyRejected("dtd")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = lambda name, attrs: builder.start(
        _clark(name), {_clark(key): value for key, value in attrs.items()}
    )
    parser.EndElementHandler = lambda name: builder.end(_clark(name))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        return builder.close()
    except (ExpatError, ValueError, AssertionError):
        raise ReplyRejected("malformed") from None


def _prepare(sock: socket.socket, host: str, interface: str | None) -> None:
    if not ipaddress.IPv4Address(host).is_multicast:
        return
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    if interface is not None:
        try:
            local = socket.inet_aton(str(ipaddress.IPv4Address(interface)))
        except ValueError:
            raise DiscoveryError(f"interface: {interface!r} is not an IPv4 address") from None
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, local)


def _merge(
    by_endpoint: dict[str, DiscoveredCamera], camera: DiscoveredCamera, rejected: Counter[str]
) -> None:
    known = by_endpoint.get(camera.endpoint)
    if known is None:
        if len(by_endpoint) == MAX_DEVICES:
            rejected["too_many_devices"] += 1
            return
        by_endpoint[camera.endpoint] = camera
        return
    by_endpoint[camera.endpoint] = DiscoveredCamera(
        endpoint=known.endpoint,
        replied_from=known.replied_from,
        xaddrs=_union(known.xaddrs, camera.xaddrs),
        scopes=_union(known.scopes, camera.scopes),
        types=_union(known.types, camera.types),
    )


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(first + second))[:MAX_ITEMS]


def _scope_values(scopes: tuple[str, ...], kind: str) -> list[str]:
    """``onvif://www.onvif.org/name/Front%20Gate`` → ``Front Gate`` for kind ``name``."""
    prefix = f"{_SCOPE_PREFIX}{kind}/"
    return [unquote(s[len(prefix) :]) for s in scopes if s.startswith(prefix)]


def _words(element: ET.Element | None) -> tuple[str, ...]:
    """A space-separated list element (XAddrs, Scopes, Types), deduplicated and bounded."""
    words = (w for w in _text(element).split() if len(w) <= MAX_TEXT_CHARS)
    return tuple(dict.fromkeys(words))[:MAX_ITEMS]


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _child(element: ET.Element | None, local_name: str) -> ET.Element | None:
    if element is None:
        return None
    return next((c for c in element if _local(c.tag) == local_name), None)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _clark(name: str) -> str:
    """Expat's ``uri}local`` → ElementTree's ``{uri}local``."""
    return "{" + name if "}" in name else name
