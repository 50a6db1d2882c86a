"""A FAKE ONVIF camera: its WS-Discovery responder and its snapshot URI, on loopback.

No camera can run here, so this stands in for two of a camera's services, speaking the
same protocols over real sockets:

- ``FakeDiscoveryResponder``: the camera's WS-Discovery service. It answers a Probe
  (SOAP over UDP) with a ProbeMatches naming its endpoint, XAddrs and scopes, either on a
  unicast loopback port or as a member of the multicast group on the loopback interface.
  It can send hostile datagrams before its genuine answer, as anything on a segment can.
- ``FakeSnapshotServer``: the camera's snapshot URI, one JPEG over HTTP behind Digest
  (RFC 7616, MD5, qop=auth) or Basic authentication, recording the requests it got.

It is not a camera: no media service (see ``FakeOnvifCamera`` in test_video_sources.py
for GetProfiles/GetStreamUri/GetSnapshotUri), no Hello/Bye announcements.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
DISCOVERY = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
SOAP = "http://www.w3.org/2003/05/soap-envelope"

# (message id of the probe) -> one datagram sent before the genuine answer.
HostileReply = Callable[[str], bytes]


def probe_matches(
    relates_to: str, endpoint: str, scopes: list[str], xaddrs: list[str], types: str
) -> bytes:
    """A ProbeMatches as ONVIF cameras send it (prefixes as a common vendor binds them)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP}" xmlns:wsa="{ADDRESSING}" '
        f'xmlns:wsdd="{DISCOVERY}" xmlns:dn="http://www.onvif.org/ver10/network/wsdl" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><SOAP-ENV:Header>'
        f"<wsa:MessageID>uuid:{uuid.uuid4()}</wsa:MessageID>"
        f"<wsa:RelatesTo>{relates_to}</wsa:RelatesTo>"
        f"<wsa:To>{ADDRESSING}/role/anonymous</wsa:To>"
        f"<wsa:Action>{DISCOVERY}/ProbeMatches</wsa:Action>"
        "</SOAP-ENV:Header><SOAP-ENV:Body><wsdd:ProbeMatches><wsdd:ProbeMatch>"
        f"<wsa:EndpointReference><wsa:Address>{endpoint}</wsa:Address></wsa:EndpointReference>"
        f"<wsdd:Types>{types}</wsdd:Types><wsdd:Scopes>{' '.join(scopes)}</wsdd:Scopes>"
        f"<wsdd:XAddrs>{' '.join(xaddrs)}</wsdd:XAddrs>"
        "<wsdd:MetadataVersion>1</wsdd:MetadataVersion>"
        "</wsdd:ProbeMatch></wsdd:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def onvif_scopes(name: str, hardware: str, locations: list[str]) -> list[str]:
    """Scope URIs with their values percent-encoded, as cameras send them."""
    return [
        "onvif://www.onvif.org/type/video_encoder",
        f"onvif://www.onvif.org/name/{quote(name)}",
        f"onvif://www.onvif.org/hardware/{quote(hardware)}",
        *(f"onvif://www.onvif.org/location/{quote(where)}" for where in locations),
    ]


class FakeDiscoveryResponder:
    """A camera's WS-Discovery service on loopback (FAKE: see the module docstring).

    ``multicast_group`` set: it joins that group on 127.0.0.1 and listens on the group's
    port (``port``, 0 for a free one); otherwise it listens on 127.0.0.1 alone.
    ``self.port`` is where to send the probe.
    """

    def __init__(
        self,
        endpoint: str,
        name: str,
        hardware: str,
        locations: list[str],
        xaddrs: list[str],
        *,
        multicast_group: str | None = None,
        port: int = 0,
        hostile: list[HostileReply] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.scopes = onvif_scopes(name, hardware, locations)
        self.xaddrs = xaddrs
        self.hostile = hostile or []
        self.probes: list[str] = []  # message ids of the probes answered
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if multicast_group is None:
            self.sock.bind(("127.0.0.1", port))
        else:  # several cameras on one segment all listen on the group's port
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((multicast_group, port))
            membership = socket.inet_aton(multicast_group) + socket.inet_aton("127.0.0.1")
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.05)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeDiscoveryResponder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            message_id = self._probe_id(data)
            if message_id is None:
                continue
            self.probes.append(message_id)
            for hostile in self.hostile:
                self.sock.sendto(hostile(message_id), sender)
            types = "dn:NetworkVideoTransmitter tds:Device"
            reply = probe_matches(message_id, self.endpoint, self.scopes, self.xaddrs, types)
            self.sock.sendto(reply, sender)

    @staticmethod
    def _probe_id(data: bytes) -> str | None:
        """The probe's MessageID if it asks for NetworkVideoTransmitters (ours is trusted)."""
        envelope = ET.fromstring(data)
        types = envelope.findtext(f".//{{{DISCOVERY}}}Probe/{{{DISCOVERY}}}Types", "")
        if "NetworkVideoTransmitter" not in types:
            return None
        return envelope.findtext(f".//{{{ADDRESSING}}}MessageID")


class FakeSnapshotServer:
    """A camera's snapshot URI on loopback (FAKE: see the module docstring).

    Serves ``jpeg`` at ``/onvif/snapshot.jpg`` to a client that answers the ``auth``
    challenge ("digest" or "basic") with ``user``/``password``; ``body`` replaces the
    answer's body, ``content_length`` its declared length (None: sent chunked).
    """

    REALM = "Fake Camera"

    def __init__(self, user: str, password: str, jpeg: bytes, auth: str = "digest") -> None:
        self.user, self.password, self.jpeg, self.auth = user, password, jpeg, auth
        self.authorizations: list[str] = []  # the Authorization header of each request
        self.chunked = False
        self._nonces: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization", "")
                fake.authorizations.append(authorization)
                if self.path != "/onvif/snapshot.jpg":
                    self._reply(404, b"no such picture")
                elif not fake.authorised(authorization):
                    self._reply(401, b"", {"WWW-Authenticate": fake.challenge()})
                else:
                    self._reply(200, fake.jpeg, {"Content-Type": "image/jpeg"})

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if fake.chunked and status == 200:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for at in range(0, len(body), 65536):
                        piece = body[at : at + 65536]
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/onvif/snapshot.jpg"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeSnapshotServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def challenge(self) -> str:
        if self.auth == "basic":
            return f'Basic realm="{self.REALM}"'
        nonce = secrets.token_hex(16)
        self._nonces.add(nonce)
        return f'Digest realm="{self.REALM}", qop="auth", nonce="{nonce}", algorithm=MD5'

    def authorised(self, authorization: str) -> bool:
        if self.auth == "basic":
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return authorization == f"Basic {token}"
        if not authorization.startswith("Digest "):
            return False
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', authorization))
        if fields.get("nonce") not in self._nonces or fields.get("username") != self.user:
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self.user}:{self.REALM}:{self.password}")
        ha2 = md5(f"GET:{fields.get('uri', '')}")
        parts = [fields.get(k, "") for k in ("nonce", "nc", "cnonce", "qop")]
        return fields.get("response") == md5(":".join([ha1, *parts, ha2]))
