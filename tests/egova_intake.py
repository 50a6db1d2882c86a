"""A stand-in eGova-style case intake on a loopback port, for the mapped-REST adapter.

It checks what such an intake checks before it files anything: the credentials (an HMAC
signature recomputed here, independently of the adapter, from the rule in
``case_bridge.mapped_rest.signed_message``'s docstring; or a bearer token or API key), the
timestamp window and nonce reuse. Evidence files arrive at ``/api/file/upload`` as
multipart/form-data, parsed here strictly and independently of any HTTP library: exactly
the example's form fields in order, then the file, whose size and SHA-256 must be the ones
declared beside it; the signature covers the multipart body as received. A case or
supplement naming attachments (``attachIDs``) is refused unless every id was uploaded.
It answers as those intakes do: HTTP 200 with
``{"code": 0, "msg": "success", "data": ...}``, result codes for refusals, and keeps the
events it filed so that status listing, lookup by external key and evidence for a closed
case behave like the real thing. A script of forced replies (any status and bytes, or no
answer until the test ends) gives the failure modes. The HTTP is real: the adapter reads
every reply as it would read a real platform's.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from loopback_server import LoopbackServer

SECRET = "gulou-shared-secret-0001"
KEY_ID = "citygw-gulou"
TOKEN = "egova-token-1"
BASE = "/eUrbanMIS"
WINDOW_MS = 300_000
HOLD_LIMIT_S = 10.0
# The example's upload form, in order; eventID only with evidence for a filed case.
UPLOAD_FIELDS = ("fileName", "contentType", "fileSize", "sha256", "bizType")
MAX_FILE_BYTES = 5 * 1024 * 1024
_BOUNDARY = re.compile(r"multipart/form-data; boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})")


@dataclass(frozen=True)
class Forced:
    """A reply the test wants next, whatever was asked: a status and body (a dict is sent
    as JSON); ``hold``: no answer until the test ends; ``cut``: the connection closed at
    once without an answer. ``act``: do what was asked first (file the event), then answer
    so: the platform acted and its answer was lost."""

    status: int = 200
    body: bytes | dict = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False
    cut: bool = False
    act: bool = False


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body: its name, file name (None for a plain
    field), content type (None when not given) and bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class Uploaded:
    """A file the intake accepted: the form fields sent with it, and the file part."""

    fields: dict[str, str]
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Received:
    method: str
    target: str  # as on the request line
    headers: dict[str, str]
    body: bytes
    authorised: bool
    at: float = 0.0  # time.monotonic() when the request was read whole


class EgovaIntakeFake:
    """``auth``: "hmac" (the example's), "bearer" or "api_key". ``ignores_filters``: the
    lookup endpoint lists every event whatever it is asked (real platforms do)."""

    def __init__(self, auth: str = "hmac", ignores_filters: bool = False) -> None:
        self.auth = auth
        self.ignores_filters = ignores_filters
        self.received: list[Received] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.supplements: list[dict[str, Any]] = []
        self.files: dict[str, Uploaded] = {}
        self._script: deque[Forced] = deque()
        self._nonces: set[str] = set()
        self._ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._ticks = itertools.count(1)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._http = LoopbackServer(self._handler(), BASE)

    @property
    def url(self) -> str:
        return self._http.url

    def script(self, *replies: Forced) -> None:
        with self._lock:
            self._script.extend(replies)

    def set_state(self, event_id: str, state_id: str) -> None:
        """The city's workflow moves an event on (``stateID`` as the platform codes it)."""
        with self._lock:
            self.events[event_id]["stateID"] = state_id
            self.events[event_id]["updateTime"] = self._clock()

    def __enter__(self) -> EgovaIntakeFake:
        self._http.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._http.stop()

    def _clock(self) -> str:
        """The platform's time: one second on per change, fixed-width like eGova's."""
        tick = next(self._ticks)
        return f"2026-11-21 10:{tick // 60:02d}:{tick % 60:02d}"

    def _authorised(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bool:
        if self.auth == "bearer":
            return headers.get("authorization") == f"Bearer {TOKEN}"
        if self.auth == "api_key":
            return headers.get("x-api-key") == TOKEN
        timestamp = headers.get("x-timestamp", "")
        nonce = headers.get("x-nonce", "")
        if headers.get("x-key-id") != KEY_ID or not timestamp.isdigit():
            return False
        if abs(int(timestamp) - time.time() * 1000) > WINDOW_MS:
            return False
        if not re.fullmatch(r"[0-9a-f]{32}", nonce) or nonce in self._nonces:
            return False
        message = f"{method}\n{target}\n{timestamp}\n{nonce}\n".encode() + body
        expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-signature", "")):
            return False
        self._nonces.add(nonce)
        return True

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = url.path.removeprefix(BASE)
        if method == "POST" and route == "/api/file/upload":
            return self._upload(parse_form_data(headers.get("content-type", ""), body))
        if method == "POST" and route in ("/api/event/report", "/api/event/supplement"):
            request = json.loads(body)
            if missing := self._unknown_attachments(request):
                return {"code": 1005, "msg": f"附件不存在: {missing}"}
            if route == "/api/event/report":
                return self._report(request)
            return self._supplement(request)
        if method == "GET" and route == "/api/event/changed":
            return self._changed(query)
        if method == "GET" and route == "/api/event/query":
            key = query.get("externalKey")
            records = [
                self._record(event_id)
                for event_id, event in self.events.items()
                if self.ignores_filters or event["extInfo"].get("externalKey") == key
            ]
            if "pageNo" in query:  # one page of pageSize, numbered from 1
                size = int(query["pageSize"])
                records = records[(int(query["pageNo"]) - 1) * size :][:size]
            return {"code": 0, "msg": "success", "data": {"records": records}}
        return {"code": 1001, "msg": "参数错误: 无此接口"}

    def _upload(self, parts: list[Part] | None) -> dict[str, Any]:
        if parts is None:
            return {"code": 1001, "msg": "参数错误: 不是 multipart/form-data"}
        *fields, file = parts
        names = tuple(part.name for part in fields)
        if names not in (UPLOAD_FIELDS, (*UPLOAD_FIELDS, "eventID")) or any(
            part.filename is not None or part.content_type is not None for part in fields
        ):
            return {"code": 1001, "msg": f"参数错误: 表单字段 {names}"}
        form = {part.name: part.data.decode(errors="replace") for part in fields}
        if file.name != "file" or file.filename != form["fileName"]:
            return {"code": 1001, "msg": "参数错误: 缺少文件"}
        if file.content_type != form["contentType"] or len(file.data) > MAX_FILE_BYTES:
            return {"code": 1001, "msg": "参数错误: 文件类型或大小"}
        if str(len(file.data)) != form["fileSize"]:
            return {"code": 1006, "msg": "文件校验失败: 大小"}
        if hashlib.sha256(file.data).hexdigest() != form["sha256"]:
            return {"code": 1006, "msg": "文件校验失败: sha256"}
        if "eventID" in form and (refusal := self._not_open(form["eventID"])):
            return refusal
        file_id = f"F{next(self._file_ids):06d}"
        self.files[file_id] = Uploaded(form, file.filename, file.content_type, file.data)
        return {"code": 0, "msg": "success", "data": {"fileID": file_id}}

    def _unknown_attachments(self, request: dict[str, Any]) -> list[str]:
        listed = request.get("attachIDs")
        return [i for i in listed.split(",") if i not in self.files] if listed else []

    def _report(self, event: dict[str, Any]) -> dict[str, Any]:
        event_id = f"GL2026112100{next(self._ids):04d}"
        now = self._clock()
        self.events[event_id] = {**event, "stateID": "1", "updateTime": now, "createTime": now}
        return {"code": 0, "msg": "success", "data": {"eventID": event_id}}

    def reported_by_hand(self, **fields: Any) -> str:
        """An event the platform filed from another channel (a citizen's call, a
        patroller): ``fields`` as an intake body has them, ``extInfo`` without our key
        unless given; its id."""
        with self._lock:
            answer = self._report({"extInfo": {}, **fields})
        return str(answer["data"]["eventID"])

    def _not_open(self, event_id: object) -> dict[str, Any] | None:
        """The refusal for evidence to an event that does not exist or is final."""
        event = self.events.get(event_id) if isinstance(event_id, str) else None
        if event is None:
            return {"code": 1004, "msg": "案件不存在"}
        if event["stateID"] == "6":
            return {"code": 2003, "msg": "案件已结案"}
        if event["stateID"] == "9":
            return {"code": 2004, "msg": "案件已作废"}
        return None

    def _supplement(self, supplement: dict[str, Any]) -> dict[str, Any]:
        if refusal := self._not_open(supplement.get("eventID")):
            return refusal
        event = self.events[supplement["eventID"]]
        self.supplements.append(supplement)
        event["updateTime"] = self._clock()
        return {"code": 0, "msg": "success", "data": {"eventID": supplement["eventID"]}}

    def _changed(self, query: dict[str, str]) -> dict[str, Any]:
        begin = query.get("updateTimeBegin", "")
        page, size = int(query["pageNo"]), int(query["pageSize"])
        listed = sorted(
            (event["updateTime"], event_id)
            for event_id, event in self.events.items()
            if event["updateTime"] >= begin
        )
        records = [self._record(event_id) for _, event_id in listed[(page - 1) * size :][:size]]
        data = {"records": records, "total": len(listed), "queryTime": self._clock()}
        return {"code": 0, "msg": "success", "data": data}

    def _record(self, event_id: str) -> dict[str, Any]:
        event = self.events[event_id]
        return {
            "eventID": event_id,
            "stateID": event["stateID"],
            "updateTime": event["updateTime"],
            "createTime": event["createTime"],
            "externalKey": event["extInfo"].get("externalKey"),
            "subTypeID": event.get("subTypeID"),
            "coordinateX": event.get("coordinateX"),
            "coordinateY": event.get("coordinateY"),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                with fake._lock:
                    authorised = fake._authorised(self.command, self.path, headers, body)
                    fake.received.append(
                        Received(
                            self.command, self.path, headers, body, authorised, time.monotonic()
                        )
                    )
                    forced = fake._script.popleft() if fake._script else None
                    if authorised and (forced is None or forced.act):
                        answer = fake._answer(self.command, self.path, headers, body)
                        forced = forced or Forced(200, answer)
                if forced is None:
                    forced = Forced(401, {"code": 401, "msg": "签名验证失败"})
                if forced.hold or forced.cut:
                    if forced.hold:
                        fake._stopped.wait(HOLD_LIMIT_S)
                    self.close_connection = True
                    return
                raw = forced.body if isinstance(forced.body, bytes) else _json(forced.body)
                self.send_response(forced.status)
                for name, value in {"Content-Type": "application/json", **forced.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _serve

            def log_message(self, *_: object) -> None:
                pass

        return Handler


def parse_form_data(content_type: str, body: bytes) -> list[Part] | None:
    """The parts of a multipart/form-data body (RFC 7578), or None unless it is exactly
    one: the declared boundary, each part opened by it and a Content-Disposition naming
    the field, the closing delimiter last and nothing after it."""
    declared = _BOUNDARY.fullmatch(content_type)
    if declared is None:
        return None
    delimiter = b"--" + declared[1].encode()
    opening, closing = delimiter + b"\r\n", b"\r\n" + delimiter + b"--\r\n"
    if not body.startswith(opening) or not body.endswith(closing):
        return None
    chunks = body[len(opening) : -len(closing)].split(b"\r\n" + delimiter + b"\r\n")
    parts = [_part(chunk) for chunk in chunks]
    return None if any(part is None for part in parts) else parts  # type: ignore[return-value]


def _part(chunk: bytes) -> Part | None:
    head, blank, data = chunk.partition(b"\r\n\r\n")
    if not blank:
        return None
    message = Message()
    for line in head.decode("ascii", errors="replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            return None
        message[name.strip()] = value.strip()
    if message.get_content_disposition() != "form-data" or not message.get_param(
        "name", header="content-disposition"
    ):
        return None
    name = message.get_param("name", header="content-disposition")
    filename = message.get_param("filename", header="content-disposition")
    return Part(str(name), None if filename is None else str(filename),
                message.get("content-type"), data)  # fmt: skip


def _json(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
