"""Adapters to workflow platforms, and what each of their answers means to the outbox.

Every request ends in a usable answer (a case: a JSON object with a short, path-safe
``id``; or a page of case statuses) or in a ``PlatformError`` of one ``Failure`` kind;
nothing else escapes, whatever the platform sends:

- ``TRANSIENT``: no answer (network, timeout), 5xx, 408/425/429, and 401/403 (a token an
  operator may fix). Retried with backoff for as long as it takes; ``Retry-After`` is
  honoured.
- ``REFUSED``: any other 4xx. The platform refuses the request as it is; retrying cannot
  help, so the command is parked for an operator.
- ``DOUBTFUL``: the platform answered, but not with an outcome we can use: a 2xx that is
  not JSON, not an object, has no usable case id or is larger than we read; a 409 that
  does not say the case is final (a conflict); a redirect. The platform may well have acted
  (filed the case), and re-sending with the same idempotency key is how to learn its
  answer, so these are retried a few times, and then parked for an operator.
- ``CASE_FINAL``: evidence for a case that the platform says is closed or void. Only a 409
  whose body names the final status (``{"case_status": "closed"}``, as the bundled platform
  answers) counts: a conflict of any other kind must not make the gateway re-file alerts.

Apart from its kind, a failure says whether the platform may have acted on the request
(``may_have_acted``): true when the request went out and no clear answer came back (a
timeout or a connection cut after sending, a 502/504 from a gateway in front of the
platform, every doubtful answer); false when it certainly did not act (no connection, a
5xx or 4xx of its own). A platform that honours our idempotency key makes the difference
moot; on one that does not (``honours_idempotency_key`` false: Open311 and most REST
intakes), the outbox looks a case up with ``find_case`` before it posts a command again
whose earlier send may have acted (``case_bridge/dispatcher.py``). An adapter that raises
a transient or doubtful failure without saying gets the safe default: it may have acted.

What is read from a platform is bounded (every adapter sends through ``send_bounded``): the
reply's size (counted as it streams, after decompression), the case id's length and
characters, the number of cases in a page.

Every adapter lets the rate limit see each HTTP request it sends (``guard_requests``: a
hook its client awaits before each one), not each call: a lookup that pages, a filing
with its uploads or a token resolved after the post take one token per request.

A lookup that does not find our key may still find our case: a platform that dropped the
key, or a citizen's report of the same spot, lists a request of the same service near our
place and time. Such a *possible match* (``NearbySettings``, ``nearby_candidate``) is never
taken as ours, and never ignored: the lookup answers DOUBTFUL with ``possible match <id>
(<m> m, <s> s)``, so the command waits for an operator instead of being filed again. A
request that carries another key of ours is another case of ours, never a candidate.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from domain import Location, parse_retry_after

RETRYABLE_STATUS = frozenset({401, 403, 408, 425, 429})
# A gateway in front of the platform answers these when the platform's own answer was lost
# or late: the platform may have acted.
GATEWAY_LOST_ANSWER = frozenset({502, 504})
# Transport errors raised before any byte of the request left: the platform cannot have
# acted. Any other (a read timeout, a connection cut after sending) leaves it unknown.
NOT_SENT_ERRORS: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
FINAL_STATUSES = frozenset({"closed", "void"})

# A case with its evidence is well below this on the bundled platform (see its limits).
MAX_CASE_REPLY_BYTES = 2 * 1024 * 1024
# A page of cases: the bundled platform cuts pages at 1 MB of stored case data.
MAX_PAGE_REPLY_BYTES = 8 * 1024 * 1024
MAX_ERROR_REPLY_BYTES = 64 * 1024
MAX_PAGE_CASES = 1000
PAGE_LIMIT = 500
# Pages a lookup by external key reads at most: PAGE_LIMIT cases each, of one class code
# changed since shortly before the alert. Past that the lookup gives no verdict.
MAX_LOOKUP_PAGES = 20
# How long before the alert the platform may stamp the case (clocks differ).
LOOKUP_CLOCK_MARGIN_S = 3600
# Case ids travel back in URL paths: short, and no character that could leave the path.
CASE_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.:-]{0,63}")
MAX_FIELD_CHARS = 64  # status names, timestamps and page cursors
DETAIL_CHARS = 300
VOID_NOTE_CHARS = 500  # the bundled platform's longest transition note


# Awaited by an adapter's HTTP client before each request it sends (the rate limit's token).
RequestHook = Callable[[httpx.Request], Awaitable[None]]
# A media link of ours, signed afresh (gateway/evidence_links.py); any other link unchanged.
FreshLink = Callable[[str], str]


class Failure(StrEnum):
    TRANSIENT = "transient"
    REFUSED = "refused"
    DOUBTFUL = "doubtful"
    CASE_FINAL = "case_final"


class PlatformError(Exception):
    """A request that did not give a usable answer; ``failure`` says what to do about it,
    ``may_have_acted`` whether the platform may have done what was asked all the same
    (default: true for transient and doubtful failures, see the module docstring)."""

    def __init__(
        self,
        reason: str,
        failure: Failure,
        *,
        retry_after_s: float | None = None,
        case_status: str | None = None,
        may_have_acted: bool | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.retry_after_s = retry_after_s
        self.case_status = case_status  # "closed" or "void" when failure is CASE_FINAL
        if may_have_acted is None:
            may_have_acted = failure in (Failure.TRANSIENT, Failure.DOUBTFUL)
        self.may_have_acted = may_have_acted


@dataclass(frozen=True, slots=True)
class CaseStatus:
    """What status sync needs of a listed case."""

    id: str
    status: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class CasePage:
    """One page of cases changed since a time.

    ``next_after``: pass it as ``after`` for the next page (None: this was the last).
    ``next_since``: the platform's word on what ``since`` to ask next time so that no change
    is missed (None when it does not say). ``skipped``: listed items that were unusable.
    """

    cases: list[CaseStatus]
    next_after: str | None
    next_since: str | None
    skipped: int


class CasePlatform(Protocol):
    """What the outbox and status sync need of a platform.

    ``honours_idempotency_key``: a repeated ``open_case`` with the same key answers the case
    the first one filed. When false, ``find_case`` must find a case filed earlier from the
    same ``body`` by ``external_key`` (our ``body["external_key"]``, which ``open_case``
    must store where ``find_case`` can match it): its id, or None when the platform
    certainly has no such case. A lookup that cannot tell raises ``PlatformError``.

    ``void_case`` voids (作废) a case whose problem was merged into another case: done (the
    case) when it is void, also when it was void already; ``CASE_FINAL`` when it is closed;
    ``REFUSED`` with the words an operator acts on (``no_void``) where the platform cannot.

    Optional: ``find_evidence`` (``EvidenceLookup``), for a platform that ignores keys but
    can be asked whether a case holds a piece of evidence. An adapter without it (or one
    answering None) cannot be asked: the outbox then follows ``evidence_after_unclear``.
    """

    @property
    def honours_idempotency_key(self) -> bool: ...

    @property
    def platform_id(self) -> str:
        """Which platform this is (the adapter and its URL): status sync keeps a cursor
        per platform, so a gateway switched to another never asks it from the old one's."""
        ...

    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]: ...

    async def find_case(self, external_key: str, body: dict[str, Any]) -> str | None: ...

    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]: ...

    async def void_case(
        self, case_id: str, reason: str, idempotency_key: str
    ) -> dict[str, Any]: ...

    async def changed_cases(self, since: str | None, after: str | None) -> CasePage: ...

    def guard_requests(self, hook: RequestHook) -> None:
        """Await ``hook`` before every HTTP request the adapter sends from now on."""

    async def aclose(self) -> None: ...


class EvidenceLookup(Protocol):
    """The optional part of ``CasePlatform``: ``find_evidence(case_id, body)`` says whether
    the case holds the evidence of ``body`` (as ``add_evidence`` sends it) after a send
    without a clear answer: True (delivered: not sent again), False (certainly not there:
    sent again), None (this platform cannot be asked); a lookup that cannot tell raises
    ``PlatformError``."""

    async def find_evidence(self, case_id: str, body: dict[str, Any]) -> bool | None: ...


# What tells one evidence item from another on a case: the alert it records.
EVIDENCE_KEY_FIELDS = ("source_id", "ts", "rule_id", "state")


def evidence_key(item: object) -> str | None:
    """An evidence item's identity (``EVIDENCE_KEY_FIELDS``, as JSON); None for a non-object."""
    if not isinstance(item, dict):
        return None
    return json.dumps([item.get(name) for name in EVIDENCE_KEY_FIELDS], default=repr)


def holds_evidence(case: dict[str, Any], body: dict[str, Any], status: int, what: str) -> bool:
    """Whether ``case`` (as the bundled API answers it) lists every evidence item of
    ``body``; DOUBTFUL when its evidence is not a list."""
    listed = case.get("evidence")
    if not isinstance(listed, list):
        raise PlatformError(f"HTTP {status} on {what}: 'evidence' is not a list", Failure.DOUBTFUL)
    kept = {evidence_key(item) for item in listed}
    wanted = [evidence_key(item) for item in body.get("evidence") or ()]
    return bool(wanted) and all(key is not None and key in kept for key in wanted)


class NearbySettings(BaseModel):
    """Where a lookup that misses our key looks for a possible match: a request of the same
    service within ``radius_m`` of our case's place and ``window_s`` of its first alert
    (either side). Bounded: a wider net would park every case of a busy street."""

    model_config = ConfigDict(extra="forbid")
    radius_m: float = Field(30.0, gt=0, le=500)
    window_s: float = Field(3600.0, gt=0, le=7 * 86_400)


DEFAULT_NEARBY = NearbySettings()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A listed request that may be our case: its id, metres from our place, and seconds
    from our first alert (positive: after it)."""

    id: str
    distance_m: float
    offset_s: float


def first_alert_ms(body: dict[str, Any]) -> int | None:
    """When the problem of a case body was first seen: its earliest evidence, epoch ms."""
    stamps = [
        item["ts"]
        for item in body.get("evidence") or ()
        if isinstance(item, dict)
        and isinstance(item.get("ts"), int)
        and not isinstance(item["ts"], bool)
        and 0 <= item["ts"] < 2**53
    ]
    return min(stamps) if stamps else None


def case_place(body: dict[str, Any]) -> tuple[float, float] | None:
    """(lat, lon) of a case body, None when it has no usable one."""
    location = body.get("location")
    if not isinstance(location, dict):
        return None
    lat, lon = location.get("lat"), location.get("lon")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        return None
    return float(lat), float(lon)


def nearby_candidate(
    nearby: NearbySettings, case_id: str, distance_m: float, moment_ms: float, first_ms: int
) -> Candidate | None:
    """The candidate a listed request of our case's service is, or None when it lies
    outside the radius or the window."""
    offset_s = (moment_ms - first_ms) / 1000
    if not (math.isfinite(distance_m) and math.isfinite(offset_s)):
        return None
    if distance_m > nearby.radius_m or abs(offset_s) > nearby.window_s:
        return None
    return Candidate(case_id, distance_m, offset_s)


class PossibleMatch(PlatformError):
    """A lookup's DOUBTFUL answer naming the nearest possible match (``candidate``), for
    an operator to decide: this case (link it) or another (file ours)."""

    def __init__(self, reason: str, candidate: Candidate) -> None:
        super().__init__(reason, Failure.DOUBTFUL)
        self.candidate = candidate


def possible_match(candidates: list[Candidate], external_key: str, what: str) -> PossibleMatch:
    """DOUBTFUL naming the nearest candidate: the command waits for an operator."""
    best = min(candidates, key=lambda c: (c.distance_m, abs(c.offset_s), c.id))
    more = f" and {len(candidates) - 1} more" if len(candidates) > 1 else ""
    return PossibleMatch(
        f"{what}: no case under {external_key!r}, but possible match {best.id}"
        f" ({best.distance_m:.0f} m, {best.offset_s:+.0f} s){more}: not filed again; an"
        " operator decides whether it is this case",
        best,
    )


def no_void(case_id: str, why: str) -> PlatformError:
    """The refusal of a platform that cannot void a case: parked for an operator to do it."""
    return PlatformError(f"platform has no void ({why}): void case {case_id} by hand",
                         Failure.REFUSED)  # fmt: skip


def usable_case_id(value: object) -> str | None:
    """The id if it is a string a case id may be (short, path-safe), else None."""
    if isinstance(value, str) and CASE_ID.fullmatch(value):
        return value
    return None


def require_case_id(case_id: str) -> None:
    """Refuse (``REFUSED``) an id no case can have before it reaches a request's path: only
    ids we accepted are stored, so this is belt and braces."""
    if usable_case_id(case_id) is None:
        raise PlatformError(f"unusable case id {shown(case_id)}", Failure.REFUSED)


def case_reply(status: int, body: bytes, what: str) -> dict[str, Any]:
    """A 2xx body that must be a case; raise DOUBTFUL otherwise."""
    case = json_object(body, what, status)
    if usable_case_id(case.get("id")) is None:
        raise PlatformError(
            f"HTTP {status} on {what} without a usable case id: {shown(case.get('id'))}",
            Failure.DOUBTFUL,
        )
    return case


def page_reply(status: int, body: bytes, what: str) -> CasePage:
    """A 2xx body that must be a page of cases; unusable items are skipped and counted."""
    page, items = _page_items(status, body, what)
    cases = [case for case in map(_case_status, items) if case is not None]
    next_after = page.get("next")
    next_since = page.get("next_since")
    if not (next_after is None or _short_text(next_after)) or not (
        next_since is None or _short_text(next_since)
    ):
        raise PlatformError(f"HTTP {status} on {what}: unusable paging", Failure.DOUBTFUL)
    return CasePage(cases, next_after, next_since, skipped=len(items) - len(cases))


def error_for(
    status: int, body: bytes, what: str, retry_after: str | None, *, evidence: bool
) -> PlatformError:
    """The failure a non-2xx answer means (see the module docstring)."""
    text = body[:DETAIL_CHARS].decode("utf-8", errors="replace")
    reason = f"HTTP {status} on {what}: {text}"
    if status == 409:
        case_status = _final_status(body) if evidence else None
        if case_status is not None:
            return PlatformError(reason, Failure.CASE_FINAL, case_status=case_status)
        return PlatformError(reason, Failure.DOUBTFUL)
    if status >= 500 or status in RETRYABLE_STATUS:
        wait = parse_retry_after(retry_after, time.time())
        return PlatformError(
            reason,
            Failure.TRANSIENT,
            retry_after_s=wait,
            may_have_acted=status in GATEWAY_LOST_ANSWER,
        )
    if 300 <= status < 400 or status < 200:
        return PlatformError(reason, Failure.DOUBTFUL)  # redirects are not followed
    return PlatformError(reason, Failure.REFUSED)


def transport_error(exc: httpx.HTTPError) -> PlatformError:
    """The transient failure a request that got no answer means; whether the platform
    may have acted depends on how far the request got (``NOT_SENT_ERRORS``)."""
    return PlatformError(
        f"{type(exc).__name__}: {exc}",
        Failure.TRANSIENT,
        may_have_acted=not isinstance(exc, NOT_SENT_ERRORS),
    )


@dataclass(frozen=True, slots=True)
class NearbyCase:
    """What a lookup compares listed requests with: our case's service, place and first
    alert, and how near counts (``nearby_of``)."""

    settings: NearbySettings
    service: str
    place: Location
    first_ms: int

    def candidate(self, case_id: str, lat: float, lon: float, moment_ms: float) -> Candidate | None:
        distance = self.place.distance_m(Location(lat, lon))
        return nearby_candidate(self.settings, case_id, distance, moment_ms, self.first_ms)


def nearby_of(
    settings: NearbySettings | None, body: dict[str, Any], service: object
) -> NearbyCase | None:
    """The comparison for ``body``; None when nearby lookups are off or the body has no
    service, place or alert time to compare."""
    place, first_ms = case_place(body), first_alert_ms(body)
    if settings is None or not isinstance(service, str) or place is None or first_ms is None:
        return None
    return NearbyCase(settings, service, Location(*place), first_ms)


@dataclass(frozen=True, slots=True)
class LookupPage:
    """One page of a lookup: our case's id if listed, the next page's ``after`` (None on
    the last), the possible matches on it and how many items could not be read."""

    case_id: str | None
    next_after: str | None
    candidates: list[Candidate]
    unreadable: int


def found_case(
    status: int, body: bytes, what: str, external_key: str, near: NearbyCase | None = None
) -> LookupPage:
    """From a 2xx page of cases in the bundled platform's shape: the case filed under
    ``external_key``, else the requests ``near`` makes candidates (those of its class code,
    without a key of ours), and the items whose key cannot be read."""
    page, items = _page_items(status, body, what)
    candidates: list[Candidate] = []
    unreadable = 0
    for item in items:
        key = item.get("external_key") if isinstance(item, dict) else 0
        if not (key is None or isinstance(key, str)):
            unreadable += 1
            continue
        if key == external_key:
            case_id = usable_case_id(item.get("id"))
            if case_id is None:
                raise PlatformError(
                    f"HTTP {status} on {what}: the case filed under {external_key!r} has no"
                    f" usable id: {shown(item.get('id'))}",
                    Failure.DOUBTFUL,
                )
            return LookupPage(case_id, None, [], 0)
        if near is not None and not key and (found := _bundled_candidate(item, near)):
            candidates.append(found)
    next_after = page.get("next")
    if next_after is not None and not _short_text(next_after):
        raise PlatformError(f"HTTP {status} on {what}: unusable paging", Failure.DOUBTFUL)
    return LookupPage(None, next_after, candidates, unreadable)


def _bundled_candidate(item: dict[str, Any], near: NearbyCase) -> Candidate | None:
    case_id, place = usable_case_id(item.get("id")), case_place(item)
    created = item.get("created_at")
    if case_id is None or place is None or item.get("class_code") != near.service:
        return None
    try:
        moment = parse_zoned(created) if isinstance(created, str) else None
    except ValueError:
        return None
    if moment is None:
        return None
    return near.candidate(case_id, place[0], place[1], moment.timestamp() * 1000)


def parse_zoned(text: str) -> datetime:
    """An ISO 8601 time with its zone, of sane length; ValueError otherwise."""
    if len(text) > MAX_FIELD_CHARS:
        raise ValueError("time too long")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return moment


def _page_items(status: int, body: bytes, what: str) -> tuple[dict[str, Any], list[Any]]:
    """A page of cases and its bounded list of items, unchecked; DOUBTFUL otherwise."""
    page = json_object(body, what, status)
    items = page.get("cases")
    if not isinstance(items, list) or len(items) > MAX_PAGE_CASES:
        raise PlatformError(
            f"HTTP {status} on {what}: 'cases' is not a list of at most {MAX_PAGE_CASES}",
            Failure.DOUBTFUL,
        )
    return page, items


def json_object(body: bytes, what: str, status: int) -> dict[str, Any]:
    """A 2xx body that must be a JSON object (every adapter's replies are); DOUBTFUL
    otherwise, since the platform answered but not in a way we can use."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PlatformError(
            f"HTTP {status} on {what} is not JSON: {shown(body)}", Failure.DOUBTFUL
        ) from None
    if not isinstance(value, dict):
        raise PlatformError(
            f"HTTP {status} on {what} is not a JSON object: {shown(value)}", Failure.DOUBTFUL
        )
    return value


def _final_status(body: bytes) -> str | None:
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    status = value.get("case_status") if isinstance(value, dict) else None
    return status if status in FINAL_STATUSES else None


def _case_status(item: object) -> CaseStatus | None:
    if not isinstance(item, dict):
        return None
    case_id, status, updated = item.get("id"), item.get("status"), item.get("updated_at")
    if usable_case_id(case_id) is None or not _short_text(status) or not _short_text(updated):
        return None
    return CaseStatus(case_id, status, updated)


def _short_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_FIELD_CHARS


def shown(value: object) -> str:
    """A value from outside as it may appear in a reason: its repr, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


async def look_up_pages(
    read_page: Callable[[str | None], Awaitable[LookupPage]],
    external_key: str,
    what: str,
    max_pages: int,
) -> str | None:
    """Every adapter's lookup loop: ``read_page(after)`` for each page in turn (``after``
    None for the first), until our case, or the last page (then ``not_found``); a listing
    longer than ``max_pages`` cannot tell (DOUBTFUL)."""
    candidates: list[Candidate] = []
    unreadable = 0
    after: str | None = None
    for _ in range(max_pages):
        page = await read_page(after)
        if page.case_id is not None:
            return page.case_id
        candidates += page.candidates
        unreadable += page.unreadable
        if page.next_after is None:
            return not_found(external_key, what, candidates, unreadable)
        after = page.next_after
    raise PlatformError(
        f"{what}: no case under {external_key!r} in {max_pages} pages, and the listing goes"
        " on: cannot tell whether it was filed",
        Failure.DOUBTFUL,
    )


def not_found(external_key: str, what: str, candidates: list[Candidate], unreadable: int) -> None:
    """The end of a lookup that read every page without our key: None ("not there") only
    when nothing listed may be our case; DOUBTFUL otherwise."""
    if candidates:
        raise possible_match(candidates, external_key, what)
    if unreadable:
        raise PlatformError(
            f"{what}: no case under {external_key!r}, but {unreadable} listed item(s) could"
            " not be read: cannot tell whether it was filed",
            Failure.DOUBTFUL,
        )


def with_fresh_links(body: dict[str, Any], fresh: FreshLink) -> dict[str, Any]:
    """``body`` with every media link of its evidence (``media``, ``media_files`` urls)
    and its ``media_url`` signed afresh, so a command that waited in the outbox past its
    links' lifetime still sends links that work; ``body`` itself is not changed."""
    renewed = dict(body)
    if isinstance(body.get("media_url"), str):
        renewed["media_url"] = fresh(body["media_url"])
    items = body.get("evidence")
    if isinstance(items, list):
        renewed["evidence"] = [_fresh_item(item, fresh) for item in items]
    return renewed


def _fresh_item(item: object, fresh: FreshLink) -> object:
    if not isinstance(item, dict):
        return item
    renewed = dict(item)
    if isinstance(item.get("media"), list):
        renewed["media"] = [fresh(m) if isinstance(m, str) else m for m in item["media"]]
    if isinstance(item.get("media_files"), list):
        renewed["media_files"] = [
            {**f, "url": fresh(f["url"])} if isinstance(f, dict) and isinstance(f.get("url"), str)
            else f
            for f in item["media_files"]
        ]  # fmt: skip
    return renewed


def lookup_since(body: dict[str, Any], before_s: float = LOOKUP_CLOCK_MARGIN_S) -> str | None:
    """A time the case filed from ``body`` cannot have been changed before: its earliest
    evidence, less ``before_s`` (a margin for the platform's clock, or a wider look-back)."""
    first_ms = first_alert_ms(body)
    if first_ms is None:
        return None
    start_s = max(0.0, first_ms / 1000 - before_s)
    return datetime.fromtimestamp(start_s, UTC).isoformat(timespec="seconds")


class BundledPlatform:
    """The bundled platform's REST API (and any platform that speaks it)."""

    honours_idempotency_key = True

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout_s: float,
        nearby: NearbySettings | None = DEFAULT_NEARBY,
    ) -> None:
        """``nearby``: where ``find_case`` looks for a possible match (None: it does not)."""
        self._nearby = nearby
        self.platform_id = f"bundled {base_url.rstrip('/')}"
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        what = "POST /api/v1/cases"
        status, reply = await self._send("POST", "/api/v1/cases", what, body, idempotency_key)
        return case_reply(status, reply, what)

    async def find_case(self, external_key: str, body: dict[str, Any]) -> str | None:
        """Pages through the cases of the body's class changed since shortly before its
        earliest evidence (or the nearby window, if wider), for the one filed under
        ``external_key``; without it, a possible match nearby or an unreadable item makes
        the answer DOUBTFUL, never "not there". The bundled platform honours idempotency
        keys, so the outbox asks this only of a platform that speaks this API without
        keeping them (``honours_idempotency_key`` false)."""
        params = {"limit": str(PAGE_LIMIT)}
        if isinstance(body.get("class_code"), str):
            params["class_code"] = body["class_code"]
        near = nearby_of(self._nearby, body, body.get("class_code"))
        before_s = max(LOOKUP_CLOCK_MARGIN_S, near.settings.window_s if near else 0)
        if (since := lookup_since(body, before_s)) is not None:
            params["since"] = since
        what = "GET /api/v1/cases"

        async def page(after: str | None) -> LookupPage:
            if after is not None:
                params["after"] = after
            status, reply = await self._send(
                "GET", "/api/v1/cases", what, None, None, params=params, limit=MAX_PAGE_REPLY_BYTES
            )
            return found_case(status, reply, what, external_key, near)

        return await look_up_pages(page, external_key, what, MAX_LOOKUP_PAGES)

    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        require_case_id(case_id)
        path = f"/api/v1/cases/{case_id}/evidence"
        what = f"POST {path}"
        status, reply = await self._send("POST", path, what, body, idempotency_key, evidence=True)
        return case_reply(status, reply, what)

    async def find_evidence(self, case_id: str, body: dict[str, Any]) -> bool:
        """Whether the case lists every evidence item of ``body`` (``holds_evidence``). The
        bundled platform honours idempotency keys, so the outbox asks this only of a
        platform that speaks this API without keeping them."""
        require_case_id(case_id)
        path = f"/api/v1/cases/{case_id}"
        what = f"GET {path}"
        status, reply = await self._send("GET", path, what, None, None)
        return holds_evidence(case_reply(status, reply, what), body, status, what)

    async def void_case(self, case_id: str, reason: str, idempotency_key: str) -> dict[str, Any]:
        """The workflow's transition to ``void``, which it allows before handling starts.
        A refused transition (409) is read against the case: void already is done (a
        re-send after a lost answer), closed is ``CASE_FINAL``, any later status cannot be
        voided through the API."""
        require_case_id(case_id)
        path = f"/api/v1/cases/{case_id}/transition"
        what = f"POST {path}"
        request = self._client.build_request(
            "POST", path, json={"to": "void", "note": reason[:VOID_NOTE_CHARS]},
            headers={"Idempotency-Key": idempotency_key},
        )  # fmt: skip
        reply = await send_bounded(self._client, request, what, MAX_CASE_REPLY_BYTES)
        if reply.status != 409:
            return case_reply(*require_success(reply, what, evidence=False), what)
        what = f"GET /api/v1/cases/{case_id}"
        status, body = await self._send("GET", f"/api/v1/cases/{case_id}", what, None, None)
        case = case_reply(status, body, what)
        if case.get("status") == "void":
            return case
        if case.get("status") == "closed":
            raise PlatformError(f"case {case_id} is closed: not voided", Failure.CASE_FINAL,
                                case_status="closed")  # fmt: skip
        raise PlatformError(
            f"case {case_id} is {shown(case.get('status'))}, past where the workflow allows a"
            f" void: void case {case_id} by hand",
            Failure.REFUSED,
        )

    async def changed_cases(self, since: str | None, after: str | None) -> CasePage:
        params = {"limit": str(PAGE_LIMIT)}
        if since:
            params["since"] = since
        if after:
            params["after"] = after
        what = "GET /api/v1/cases"
        status, reply = await self._send(
            "GET", "/api/v1/cases", what, None, None, params=params, limit=MAX_PAGE_REPLY_BYTES
        )
        return page_reply(status, reply, what)

    def guard_requests(self, hook: RequestHook) -> None:
        guard_client(self._client, hook)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        body: dict[str, Any] | None,
        idempotency_key: str | None,
        *,
        params: dict[str, str] | None = None,
        limit: int = MAX_CASE_REPLY_BYTES,
        evidence: bool = False,
    ) -> tuple[int, bytes]:
        """(status, body) of a 2xx; a PlatformError for anything else."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        request = self._client.build_request(
            method, path, json=body, headers=headers, params=params
        )
        reply = await send_bounded(self._client, request, what, limit)
        return require_success(reply, what, evidence=evidence)


def guard_client(client: httpx.AsyncClient, hook: RequestHook) -> None:
    """Every adapter's ``guard_requests``: ``hook`` runs before each request ``client``
    sends (httpx awaits request hooks per request, redirects included)."""
    client.event_hooks["request"].append(hook)


@dataclass(frozen=True, slots=True)
class BoundedReply:
    """A platform's answer as far as it was read: all of a 2xx body, at most
    ``MAX_ERROR_REPLY_BYTES`` of any other (enough for the reason)."""

    status: int
    body: bytes
    retry_after: str | None  # the Retry-After header, unparsed

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300


async def send_bounded(
    client: httpx.AsyncClient, request: httpx.Request, what: str, limit: int
) -> BoundedReply:
    """Send ``request`` and read the answer, whatever its status, within bounds: a 2xx
    larger than ``limit`` bytes is DOUBTFUL (the platform answered, we cannot read it), a
    request without an answer is TRANSIENT (``transport_error``). Every adapter sends
    through here so that no reply is read unbounded; what a non-2xx means is the
    adapter's to say (``require_success`` for the bundled platform's meaning)."""
    try:
        response = await client.send(request, stream=True)
        try:
            status = response.status_code
            success = 200 <= status < 300
            body = await _read_bounded(
                response, limit if success else MAX_ERROR_REPLY_BYTES, truncate=not success
            )
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise transport_error(exc) from exc
    if body is None:
        raise PlatformError(
            f"HTTP {status} on {what}: reply larger than {limit} bytes", Failure.DOUBTFUL
        )
    return BoundedReply(status, body, response.headers.get("Retry-After"))


def require_success(reply: BoundedReply, what: str, *, evidence: bool) -> tuple[int, bytes]:
    """(status, body) of a 2xx; the ``error_for`` its status means otherwise."""
    if reply.success:
        return reply.status, reply.body
    raise error_for(reply.status, reply.body, what, reply.retry_after, evidence=evidence)


async def _read_bounded(response: httpx.Response, limit: int, *, truncate: bool) -> bytes | None:
    """At most ``limit`` bytes of the body; past that, the first ``limit`` bytes when
    ``truncate``, else None. Counts decoded bytes, so a compressed bomb is cut short too."""
    declared = response.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit] if truncate else None
    return b"".join(chunks)
