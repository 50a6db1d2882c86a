"""A platform that keeps no idempotency keys, for the outbox's delivery semantics.

Open311 servers and most city REST intakes file a case for every post, however often the
same one comes. This fake is the scripted platform (``tests/scripted_platform.py``: real
HTTP on loopback, replies scripted one by one) speaking the bundled platform's API as such
an intake would: each post files a new case and ``Idempotency-Key`` is ignored; the cases
filed are listed on ``GET /api/v1/cases`` (by class code, a few per page, with their
``external_key``), so the real adapter's lookup reads them as it would a real platform's.

A scripted ``Filed(answer)`` files the case first and then gives ``answer`` (a reply, or
``HANG``/``CUT``) instead of it: the platform acted, the client cannot tell. Any other
scripted answer files nothing. ``filed()`` counts the cases per external key: what the
tests assert exactly.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from scripted_platform import Answer, Reply, Request, ScriptedPlatformFake

from case_bridge.platform import BundledPlatform


class KeylessBundled(BundledPlatform):
    """The real adapter for a platform that speaks the bundled API but keeps no keys."""

    honours_idempotency_key = False


@dataclass(frozen=True)
class Filed:
    """File the case as a good platform would, then answer ``then`` instead of it."""

    then: Answer


class KeylessPlatformFake(ScriptedPlatformFake):
    def __init__(self, port: int = 0, page_size: int = 2) -> None:
        super().__init__(port)
        self.cases: list[dict[str, Any]] = []
        self._page_size = page_size
        self._changed = threading.Condition()

    def filed(self) -> Counter[str]:
        """Cases filed, per external key."""
        with self._changed:
            return Counter(case["external_key"] for case in self.cases)

    def filed_elsewhere(self, **fields: Any) -> str:
        """A case that reached the platform another way (a citizen's report): ``fields``
        as the platform lists them, no external key; its id."""
        with self._changed:
            case_id = f"C20261121-{len(self.cases) + 1:06d}"
            self.cases.append({"id": case_id, "status": "accepted", "external_key": None,
                               "updated_at": "2026-11-21T08:00:00+08:00", **fields})  # fmt: skip
        return case_id

    def calls(self) -> list[str]:
        """Per request in order: ``POST <external key>`` for a filing, ``GET`` for a listing,
        else method and path."""
        return [_call(r) for r in self.requests]

    def wait_filed(self, count: int, timeout_s: float = 10.0) -> None:
        """Block until ``count`` cases are filed (for a thread, or ``asyncio.to_thread``)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.cases) >= count, timeout_s):
                raise AssertionError(f"{len(self.cases)} of {count} cases filed")

    def _next(self, request: Request) -> Answer:
        answer = super()._next(request)
        if isinstance(answer, Filed):
            self._file(request)
            return answer.then
        return answer

    def _well_behaved(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/api/v1/cases":
            return Reply(201, self._file(request))
        if request.method == "GET" and request.path == "/api/v1/cases":
            return Reply(200, self._page(request.query))
        return super()._well_behaved(request)

    def _file(self, request: Request) -> dict[str, Any]:
        with self._changed:
            case = {
                "id": f"C20261121-{len(self.cases) + 1:06d}",
                "status": "accepted",
                "class_code": request.body["class_code"],
                "external_key": request.body["external_key"],
                "updated_at": "2026-11-21T08:00:00+08:00",
            }
            self.cases.append(case)
            self._changed.notify_all()
        return case

    def _page(self, query: dict[str, str]) -> dict[str, Any]:
        with self._changed:
            listed = [
                case
                for case in self.cases
                if query.get("class_code") in (None, case["class_code"])
                and case["id"] > query.get("after", "")
            ]
        page = listed[: min(self._page_size, int(query.get("limit", "500")))]
        more = len(listed) > len(page)
        return {"cases": page, "count": len(page), "next": page[-1]["id"] if more else None}


def _call(request: Request) -> str:
    if request.path == "/api/v1/cases":
        return f"POST {request.body['external_key']}" if request.method == "POST" else "GET"
    return f"{request.method} {request.path}"
