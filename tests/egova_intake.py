"""A stand-in eGova-style case intake on a loopback port, for the mapped-REST adapter.

It checks what such an intake checks before it files anything: the credentials (an HMAC
signature recomputed here, independently of the adapter, from the rule in
``case_bridge.mapped_rest.signed_message``'s docstring; or a bearer token or API key), the
timestamp window and nonce reuse. It answers as those intakes do: HTTP 200 with
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
class Received:
    method: str
    target: str  # as on the request line
    headers: dict[str, str]
    body: bytes
    authorised: bool


class EgovaIntakeFake:
    """``auth``: "hmac" (the example's), "bearer" or "api_key". ``ignores_filters``: the
    lookup endpoint lists every event whatever it is asked (real platforms do)."""

    def __init__(self, auth: str = "hmac", ignores_filters: bool = False) -> None:
        self.auth = auth
        self.ignores_filters = ignores_filters
        self.received: list[Received] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.supplements: list[dict[str, Any]] = []
        self._script: deque[Forced] = deque()
        self._nonces: set[str] = set()
        self._ids = itertools.count(1)
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

    def _answer(self, method: str, target: str, body: bytes) -> dict[str, Any]:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = url.path.removeprefix(BASE)
        if method == "POST" and route == "/api/event/report":
            return self._report(json.loads(body))
        if method == "POST" and route == "/api/event/supplement":
            return self._supplement(json.loads(body))
        if method == "GET" and route == "/api/event/changed":
            return self._changed(query)
        if method == "GET" and route == "/api/event/query":
            key = query.get("externalKey")
            records = [
                self._record(event_id)
                for event_id, event in self.events.items()
                if self.ignores_filters or event["extInfo"]["externalKey"] == key
            ]
            return {"code": 0, "msg": "success", "data": {"records": records}}
        return {"code": 1001, "msg": "参数错误: 无此接口"}

    def _report(self, event: dict[str, Any]) -> dict[str, Any]:
        event_id = f"GL2026112100{next(self._ids):04d}"
        self.events[event_id] = {**event, "stateID": "1", "updateTime": self._clock()}
        return {"code": 0, "msg": "success", "data": {"eventID": event_id}}

    def _supplement(self, supplement: dict[str, Any]) -> dict[str, Any]:
        event = self.events.get(supplement.get("eventID"))
        if event is None:
            return {"code": 1004, "msg": "案件不存在"}
        if event["stateID"] in ("6", "9"):
            code, message = (
                (2003, "案件已结案") if event["stateID"] == "6" else (2004, "案件已作废")
            )
            return {"code": code, "msg": message}
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
            "externalKey": event["extInfo"]["externalKey"],
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
                        Received(self.command, self.path, headers, body, authorised)
                    )
                    forced = fake._script.popleft() if fake._script else None
                    if authorised and (forced is None or forced.act):
                        answer = fake._answer(self.command, self.path, body)
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


def _json(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
