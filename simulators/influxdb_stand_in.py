"""A STAND-IN for InfluxDB 2.x's write endpoint, ``POST /api/v2/write``, on loopback.

Why a stand-in and not InfluxDB: no InfluxDB 2.x (nor 1.8+, which also serves
``/api/v2/write``) can be installed where these tests run; Debian ships 1.6.7, which answers
404 to the v2 endpoint. So the tests run the real influxdb-client over real sockets against
this server, which checks each request as InfluxDB 2 does, and where cheap more strictly:

- path ``/api/v2/write``, method POST, ``org``, ``bucket`` and ``precision`` given once each
  and matching (a precision other than the expected one is refused: the gateway must write
  ms), ``Authorization: Token <token>`` (401 otherwise, as InfluxDB answers);
- ``Content-Type: text/plain`` (charset utf-8 if named), ``Content-Length``, and
  ``Content-Encoding`` absent, ``identity`` or ``gzip`` (the body is gunzipped and recorded
  as having been compressed);
- every line parsed strictly: measurement, escaped tag keys and values, typed fields (float,
  ``i`` integers, ``u`` unsigned, booleans, strings), an optional integer timestamp that must
  fit InfluxDB's nanosecond range; reserved keys and duplicate tags are refused.

A bad line gets InfluxDB's 400 ``{"code": "invalid", "message": "unable to parse ..."}``; the
whole request is refused, where InfluxDB would keep the good lines of a partial write. It
stores nothing but the accepted points, in arrival order, for the tests to compare.

Scripted trouble: ``fail(status, ...)`` answers 503/429/... (with ``Retry-After``) for a
window of time or a number of requests; ``hang()`` holds requests until ``release()``;
``stop()``/``start()`` closes the port and every open connection (connection refused), then
serves again on the same port.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FieldValue = float | int | bool | str
PRECISIONS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
RESERVED_KEYS = {"_measurement", "_field", "time"}
_FLOAT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_INT = re.compile(r"[-+]?\d+")
_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}


class LineProtocolError(ValueError):
    """A line InfluxDB would refuse; ``str()`` is the reason."""


@dataclass(frozen=True)
class LinePoint:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    ts: int | None


@dataclass
class WriteRequest:
    """One request as received, and what the stand-in answered."""

    at: float  # time.monotonic()
    query: dict[str, list[str]]
    headers: dict[str, str]
    gzipped: bool = False
    status: int = 0
    lines: int = 0


def parse_body(text: str, precision: str) -> list[LinePoint]:
    """Every non-empty, non-comment line, parsed; the first bad line raises."""
    points = []
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            points.append(parse_line(line, precision))
        except LineProtocolError as exc:
            raise LineProtocolError(f"unable to parse '{line}': {exc}") from None
    return points


def parse_line(line: str, precision: str = "ns") -> LinePoint:
    measurement, i = _scan(line, 0, stops=", ", escapable=", ")
    if not measurement:
        raise LineProtocolError("missing measurement")
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        key, i = _key(line, i + 1, "tag")
        value, i = _scan(line, i, stops=",= ", escapable=",= ")
        if not value or (i < len(line) and line[i] == "="):
            raise LineProtocolError(f"invalid tag value for {key!r}")
        if key in tags:
            raise LineProtocolError(f"duplicate tag {key!r}")
        tags[key] = value
    if i >= len(line) or line[i] != " ":
        raise LineProtocolError("missing fields")
    fields: dict[str, FieldValue] = {}
    i += 1
    while True:
        key, i = _key(line, i, "field")
        value, i = _field_value(line, i, key)
        fields[key] = value
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    ts = None
    if i < len(line):
        text = line[i + 1 :]
        if line[i] != " " or not _INT.fullmatch(text):
            raise LineProtocolError(f"bad timestamp {text!r}")
        ts = int(text)
        if not -(2**63) <= ts * PRECISIONS[precision] < 2**63:
            raise LineProtocolError(f"timestamp {ts} out of range for precision {precision}")
    return LinePoint(measurement, tags, fields, ts)


def _scan(line: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Text up to the first unescaped stop character; ``\\x`` is ``x`` for escapable x."""
    out = []
    while i < len(line) and line[i] not in stops:
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in escapable + "\\":
            i += 1
        out.append(line[i])
        i += 1
    return "".join(out), i


def _key(line: str, i: int, what: str) -> tuple[str, int]:
    key, i = _scan(line, i, stops=",= ", escapable=",= ")
    if not key or i >= len(line) or line[i] != "=":
        raise LineProtocolError(f"missing {what} key or '=' at column {i}")
    if key in RESERVED_KEYS:
        raise LineProtocolError(f"{what} key {key!r} is reserved")
    return key, i + 1


def _field_value(line: str, i: int, key: str) -> tuple[FieldValue, int]:
    if line.startswith('"', i):
        out, i = [], i + 1
        while i < len(line) and line[i] != '"':
            if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in '"\\':
                i += 1
            out.append(line[i])
            i += 1
        if i >= len(line):
            raise LineProtocolError(f"unterminated string for field {key!r}")
        return "".join(out), i + 1
    end = i
    while end < len(line) and line[end] not in ", ":
        end += 1
    raw = line[i:end]
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE, end
    if raw.endswith("i") and _INT.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        if not -(2**63) <= value < 2**63:
            raise LineProtocolError(f"integer out of range for field {key!r}")
        return value, end
    if raw.endswith("u") and raw[:-1].isdigit():
        value = int(raw[:-1])
        if value >= 2**64:
            raise LineProtocolError(f"unsigned out of range for field {key!r}")
        return value, end
    if _FLOAT.fullmatch(raw):
        return float(raw), end
    raise LineProtocolError(f"invalid field value {raw!r} for {key!r}")


@dataclass
class _Failure:
    status: int
    until: float | None  # monotonic deadline
    times: int | None
    retry_after: str | None


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    points: list[LinePoint] = field(default_factory=list)
    requests: list[WriteRequest] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    running: threading.Event = field(default_factory=threading.Event)  # cleared while hung
    held: int = 0  # requests waiting for release()


class InfluxV2StandIn:
    """The stand-in server; ``url`` is what the gateway's ``influxdb.url`` points at."""

    def __init__(
        self, org: str = "city", bucket: str = "telemetry", token: str = "secret-token",
        precision: str = "ms",
    ) -> None:  # fmt: skip
        self.org, self.bucket, self.token, self.precision = org, bucket, token, precision
        self._state = _State()
        self._state.running.set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def points(self) -> list[LinePoint]:
        with self._state.lock:
            return list(self._state.points)

    @property
    def held(self) -> int:
        """Requests received and held by ``hang()``, not answered yet."""
        with self._state.lock:
            return self._state.held

    @property
    def requests(self) -> list[WriteRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def start(self) -> None:
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.stand_in = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listening port and every open connection: clients see it down."""
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        self.release()
        self._thread.join(5)

    def fail(
        self,
        status: int,
        *,
        for_s: float | None = None,
        times: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer ``status`` to every write for ``for_s`` seconds or ``times`` requests."""
        until = None if for_s is None else time.monotonic() + for_s
        with self._state.lock:
            self._state.failures.append(_Failure(status, until, times, retry_after))

    def hang(self) -> None:
        self._state.running.clear()

    def release(self) -> None:
        self._state.running.set()

    def __enter__(self) -> InfluxV2StandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- called from the handler threads ---------------------------------------------------

    def _hold(self) -> None:
        with self._state.lock:
            self._state.held += 1
        self._state.running.wait()
        with self._state.lock:
            self._state.held -= 1

    def _scripted_failure(self) -> _Failure | None:
        with self._state.lock:
            now = time.monotonic()
            for failure in self._state.failures:
                if failure.until is not None and now >= failure.until:
                    continue
                if failure.times is not None:
                    if failure.times <= 0:
                        continue
                    failure.times -= 1
                return failure
        return None

    def _answer(self, request: WriteRequest, method: str, path: str, body: bytes) -> tuple:
        """(status, json body or None, extra headers) for one request."""
        if method != "POST" or path != "/api/v2/write":
            return 404, {"code": "not found", "message": "path not found"}, {}
        if request.headers.get("authorization") != f"Token {self.token}":
            return 401, {"code": "unauthorized", "message": "unauthorized access"}, {}
        problem = self._check_query(request.query) or self._check_headers(request.headers)
        if problem:
            return problem
        failure = self._scripted_failure()
        if failure is not None:
            extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return failure.status, {"code": "unavailable", "message": "scripted"}, extra
        try:
            if request.gzipped:
                body = gzip.decompress(body)
            text = body.decode("utf-8")
            points = parse_body(text, self.precision)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            return 400, {"code": "invalid", "message": f"unreadable body: {exc}"}, {}
        except LineProtocolError as exc:
            return 400, {"code": "invalid", "message": str(exc)}, {}
        with self._state.lock:
            self._state.points.extend(points)
        request.lines = len(points)
        return 204, None, {}

    def _check_query(self, query: dict[str, list[str]]) -> tuple | None:
        for name in ("org", "bucket", "precision"):
            if len(query.get(name, [])) != 1:
                message = f"{name} must be given exactly once"
                return 400, {"code": "invalid", "message": message}, {}
        org, bucket, precision = (query[n][0] for n in ("org", "bucket", "precision"))
        if org != self.org:
            return 404, {"code": "not found", "message": f'organization name "{org}" not found'}, {}
        if bucket != self.bucket:
            return 404, {"code": "not found", "message": f'bucket "{bucket}" not found'}, {}
        if precision != self.precision:
            message = f"precision {precision!r}: this stand-in expects {self.precision!r}"
            return 400, {"code": "invalid", "message": message}, {}
        return None

    def _check_headers(self, headers: dict[str, str]) -> tuple | None:
        media, _, params = headers.get("content-type", "").partition(";")
        charset = params.strip().lower()
        if media.strip() != "text/plain" or charset not in ("", "charset=utf-8"):
            message = f"Content-Type {headers.get('content-type')!r} is not line protocol"
            return 400, {"code": "invalid", "message": message}, {}
        if headers.get("content-encoding", "identity") not in ("identity", "gzip"):
            return 415, {"code": "invalid", "message": "unsupported content encoding"}, {}
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stand_in: InfluxV2StandIn

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def drop_connections(self) -> None:
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client pools connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        self._handle("POST")

    def do_GET(self) -> None:
        self._handle("GET")

    def _handle(self, method: str) -> None:
        stand_in = self.server.stand_in
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = WriteRequest(
            at=time.monotonic(),
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=headers,
            gzipped=headers.get("content-encoding") == "gzip",
        )
        if "content-length" not in headers:
            status, body, extra = 411, {"code": "invalid", "message": "length required"}, {}
        else:
            payload = self.rfile.read(int(headers["content-length"]))
            stand_in._hold()
            status, body, extra = stand_in._answer(request, method, parts.path, payload)
        request.status = status
        with stand_in._state.lock:
            stand_in._state.requests.append(request)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if body is None:
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``requests`` instead."""
