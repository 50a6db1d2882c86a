"""A small Open311 server that deviates from the spec on demand, for the adapter's tests.

By default it behaves: two services (``"001"`` with an ``external_key`` attribute, ``"002"``
without metadata), ``POST requests.json`` files ``R1``, ``R2``, ... and lists them back
with their description and attributes. A test scripts exact replies per route
(``script("POST", "/requests.json", Reply(...))``), answered in order before the default,
and can hold a POST's answer until released (``hold``), so that the client times out after
the server filed. The HTTP is real (a thread on a loopback port).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from loopback_server import LoopbackServer
from scripted_platform import Reply

PREFIX = "/v2"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    form: list[tuple[str, str]]


SERVICES = [
    {"service_code": "001", "service_name": "Flooding", "metadata": True, "type": "realtime"},
    {"service_code": "002", "service_name": "Bins", "metadata": False, "type": "realtime"},
]
DEFINITION = {
    "service_code": "001",
    "attributes": [
        {"variable": True, "code": "external_key", "datatype": "string", "required": False}
    ],
}


class DeviantServer:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.filed: list[dict[str, Any]] = []
        self.listing_cap: int | None = None  # most requests one listing returns
        self.hold = threading.Event()
        self.hold.set()  # set: answer at once; cleared: POSTs wait until it is set
        self._scripts: dict[tuple[str, str], deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._handler(), PREFIX)
        self.url = self._server.url

    def script(self, method: str, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[(method, path)].extend(replies)

    def filed_elsewhere(self, **request: Any) -> str:
        """A request that reached the server another way (a citizen's app, a call centre):
        ``request``'s fields as the server lists them, "E<n>" its id."""
        with self._lock:
            request_id = f"E{len(self.filed) + 1}"
            self.filed.append({"service_request_id": request_id, "status": "open", **request})
        return request_id

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    def __enter__(self) -> DeviantServer:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.hold.set()
        self._server.stop()

    def _answer(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            scripted = self._scripts.get((seen.method, seen.path))
            if scripted:
                return scripted.popleft()
        return self._well_behaved(seen)

    def _well_behaved(self, seen: Seen) -> Reply:
        if seen.path == "/services.json":
            return Reply(200, SERVICES)
        if seen.path == "/services/001.json":
            return Reply(200, DEFINITION)
        if seen.method == "POST" and seen.path == "/requests.json":
            form = dict(seen.form)
            with self._lock:
                request_id = f"R{len(self.filed) + 1}"
                self.filed.append({
                    "service_request_id": request_id,
                    "status": "open",
                    "service_code": form.get("service_code"),
                    "description": form.get("description"),
                    "lat": form.get("lat"),
                    "long": form.get("long"),
                    "requested_datetime": datetime.now(UTC).isoformat(timespec="seconds"),
                    "attributes": {
                        k[len("attribute[") : -1]: v
                        for k, v in seen.form
                        if k.startswith("attribute[")
                    },
                })  # fmt: skip
            return Reply(200, [{"service_request_id": request_id}])
        if seen.method == "GET" and seen.path == "/requests.json":
            return Reply(200, self._listing(seen.query))
        return Reply(404, b"<html>Not Found</html>", {"Content-Type": "text/html"})

    def _listing(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """The filed requests a ``GET requests`` asks for: by id, else filtered by
        ``updated_after`` (on the change time) and ``end_date`` (on the filing time).
        With ``listing_cap`` set, only that many, newest change first: what a server that
        caps its listings silently does, and the worst order for a client's cursor."""
        wanted = set(filter(None, query.get("service_request_id", "").split(",")))
        after, end = query.get("updated_after"), query.get("end_date")
        with self._lock:
            listed = [
                r
                for r in self.filed
                if (not wanted or r["service_request_id"] in wanted)
                and (after is None or _at(_changed(r)) > _at(after))
                and (end is None or _at(r["requested_datetime"]) <= _at(end))
            ]
        if self.listing_cap is None:
            return listed
        return sorted(listed, key=lambda r: _at(_changed(r)), reverse=True)[: self.listing_cap]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    url.path.removeprefix(PREFIX),
                    {k: v[-1] for k, v in parse_qs(url.query).items()},
                    parse_qsl(raw.decode(), keep_blank_values=True),
                )
                reply = server._answer(seen)
                if self.command == "POST":
                    server.hold.wait(10)
                body = reply.encoded()
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up waiting (a test of exactly that)
                    self.close_connection = True

            do_GET = do_POST = _serve

            def log_message(self, *_: object) -> None:
                pass

        return Handler


def _changed(request: dict[str, Any]) -> str:
    return str(request.get("updated_datetime") or request["requested_datetime"])


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)
