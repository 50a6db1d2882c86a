"""A ``CasePlatform`` for platforms with an API of their own, shaped by configuration.

Most 数字城管 platforms (eGova's intake and its like) take a JSON body with their own field
names, nesting and code tables, answer HTTP 200 with a result code inside, and sign
requests their own way. ``MappedRestSettings`` (``mapped_rest_settings.py``) says all of
that for one platform; this module builds the requests from it and reads the replies.

Answers become ``PlatformError`` kinds as ``platform.py`` defines them: no answer, 5xx,
408/425/429/401/403 → TRANSIENT; other 4xx → REFUSED; a 2xx that is not a JSON object,
lacks a usable case id or is larger than we read → DOUBTFUL. Inside a 2xx, the mapping's
result check decides (``ResultCheck``): success, refused, transient, the case is final (for
evidence), or doubtful for any code it does not know. A case that cannot be turned into
the platform's request (a class code a table lacks, a required field missing) is REFUSED
before anything is sent, with the field named.

A merged duplicate's case is voided through the mapping's ``void_case`` endpoint; a
mapping without one refuses the void (parked) with the case to void by hand.

HMAC signing: see ``signed_message`` for exactly which bytes are signed. Whatever the auth,
its secret is hidden from every failure's reason, wherever a platform echoes it
(``hidden_secrets``).

Evidence files (``upload`` in the mapping; which files, and how their bytes are checked:
``mapped_rest_upload.py``): before a case is filed or evidence added, each of its files
is uploaded alone and the ids the platform answers go into that request's body. A failed
upload fails the whole call with the upload's own kind, so the outbox retries or parks the
command as it would a failed send; it says the platform did not act on the case
(``may_have_acted`` false: nothing about the case was sent), so no lookup follows. Files
uploaded before a later failure stay on the platform unreferenced and are uploaded again
on the next attempt. A 2xx upload reply without a readable file id is REFUSED (parked).

Most such platforms keep no idempotency key (``honours_idempotency_key`` is true only
when the mapping names the header of one that does), so before the outbox posts again a
command whose earlier send may have acted, ``find_case`` looks the case up by our external
key through the mapping's ``find_case`` endpoint. A platform without one cannot be asked:
``find_case`` then refuses (the command is parked for an operator to check the platform)
rather than answer "not there" and risk a second case. "Not there" needs the whole listing
read (every page, up to ``max_pages``: a numbered page ends the listing only when empty or
when the reply says it is the last, never for being shorter than the size asked, which
platforms cap silently; without paging, fewer items than ``listing_cap``)
with every item's key readable and no possible match nearby (``mapped_rest_nearby.py``);
anything less is DOUBTFUL, so the command is not posted again. Result codes the mapping lists as
``refused`` or ``transient`` are the platform saying it did not act; an unknown one may
have acted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from case_bridge.coordinates import PlatformCoordinates
from case_bridge.hidden_secrets import scrubbed_body, secret_forms, secrets_hidden
from case_bridge.mapped_rest_nearby import MappedNearby
from case_bridge.mapped_rest_settings import (
    ApiKeyAuth,
    BearerAuth,
    CaseRequest,
    ChangedCases,
    FieldSpec,
    FindCase,
    HmacAuth,
    Listing,
    MappedRestSettings,
    PageNumbers,
    Request,
    ResultCheck,
    Upload,
    as_text,
)
from case_bridge.mapped_rest_upload import (
    EvidenceFile,
    EvidenceReader,
    attachment_fields,
    file_id_text,
    file_problem,
    form_root,
    plan_uploads,
)
from case_bridge.platform import (
    MAX_CASE_REPLY_BYTES,
    MAX_FIELD_CHARS,
    MAX_PAGE_CASES,
    MAX_PAGE_REPLY_BYTES,
    Candidate,
    CasePage,
    CaseStatus,
    Failure,
    LookupPage,
    PlatformError,
    RequestHook,
    json_object,
    look_up_pages,
    no_void,
    require_case_id,
    require_success,
    send_bounded,
    shown,
    usable_case_id,
)

log = logging.getLogger(__name__)

MESSAGE_CHARS = 200  # of a platform's result message, in a reason


class _Absent:
    """A path that leads nowhere (distinct from a JSON null)."""


ABSENT = _Absent()


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path (digits index lists), or ``ABSENT``."""
    value = document
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return ABSENT
    return value


def signed_message(method: str, target: bytes, timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes an HMAC-SHA256 signature covers, joined by single LF (0x0A) bytes:

    1. the method, upper case (``POST``);
    2. the request target exactly as on the request line: the path (with the base URL's
       path) and, when there is a query, ``?`` and the query string, percent-encoded as
       sent (``/eUrbanMIS/api/event/query?externalKey=INC-1``);
    3. the timestamp header's value (Unix time in ms or s, decimal digits);
    4. the nonce header's value (32 lowercase hex digits, new for every request);
    5. the body bytes exactly as sent (UTF-8 JSON; empty for a GET), and nothing after.
       For an upload that is the whole ``multipart/form-data`` body: every boundary line,
       part header, form value and the file's bytes, so neither the file nor the hash sent
       beside it can be swapped. The boundary is the body's first line: a platform that
       checks it against the Content-Type header's needs nothing else unsigned.

    The key is the shared secret's UTF-8 bytes; the signature header carries the digest in
    lowercase hex or base64. Method and target are signed so that a signed body cannot be
    replayed to another endpoint; timestamp and nonce so that it cannot be replayed later.
    """
    return b"\n".join((method.encode(), target, timestamp.encode(), nonce.encode(), body))


def read_checked(
    check: ResultCheck | None,
    status: int,
    body: bytes,
    what: str,
    case_final: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A 2xx body as a JSON object whose result code (if the mapping checks one) says
    success; a PlatformError of the kind the code means otherwise."""
    reply = json_object(body, what, status)
    if check is None:
        return reply
    code = lookup(reply, check.path)
    if isinstance(code, _Absent | dict | list):
        raise PlatformError(
            f"HTTP {status} on {what}: no result code at {check.path}", Failure.DOUBTFUL
        )
    text = as_text(code)
    if text in {as_text(value) for value in check.success}:
        return reply
    message = lookup(reply, check.message_path) if check.message_path else ABSENT
    said = f": {message[:MESSAGE_CHARS]}" if isinstance(message, str) else ""
    reason = f"HTTP {status} on {what}: result {text[:MAX_FIELD_CHARS]!r}{said}"
    if case_final and text in case_final:
        raise PlatformError(reason, Failure.CASE_FINAL, case_status=case_final[text])
    if text in {as_text(value) for value in check.refused}:
        raise PlatformError(reason, Failure.REFUSED, may_have_acted=False)
    if text in {as_text(value) for value in check.transient}:
        raise PlatformError(reason, Failure.TRANSIENT, may_have_acted=False)
    raise PlatformError(reason, Failure.DOUBTFUL)


def read_case_id(reply: dict[str, Any], path: str, status: int, what: str) -> str:
    """The case id at ``path``: text, or an integer as text; DOUBTFUL otherwise."""
    value = lookup(reply, path)
    case_id = usable_case_id(_id_text(value))
    if case_id is None:
        raise PlatformError(
            f"HTTP {status} on {what} without a usable case id at {path}: {shown(value)}",
            Failure.DOUBTFUL,
        )
    return case_id


def read_page(
    request: ChangedCases, status: int, body: bytes, what: str, page_number: int | None
) -> CasePage:
    """A 2xx body as a page of case statuses; unusable items are skipped and counted."""
    reply = read_checked(request.check, status, body, what)
    items = _items(reply, request.items, status, what)
    cases = [case for case in (_case_status(request, item) for item in items) if case]
    next_since = _paging_text(reply, request.next_since, status, what)
    next_after = _next_page(request, reply, len(items), page_number, status, what)
    return CasePage(cases, next_after, next_since, skipped=len(items) - len(cases))


def _next_page(
    request: Listing, reply: dict[str, Any], listed: int, page_number: int | None,
    status: int, what: str,
) -> str | None:  # fmt: skip
    """The next page's cursor or number, None when the listing says this page is its last.
    A numbered page shorter than the size asked is no such word: platforms cap the size
    silently, and ending there would leave the rest unread (``PageNumbers``)."""
    if request.next_cursor is not None:
        return _paging_text(reply, request.next_cursor, status, what)
    pages = request.page_numbers
    if pages is None or page_number is None or listed == 0:
        return None
    if _said_last(pages, reply, listed, page_number):
        return None
    return str(page_number + 1)


def _said_last(pages: PageNumbers, reply: dict[str, Any], listed: int, page_number: int) -> bool:
    """Whether the reply's ``has_more`` or ``total`` says this page is the last; False
    when the mapping names neither or the reply gives nothing usable there. With
    ``total``: the pages read, each as long as this one, hold it all (if this page is
    short because it is the last, one more, empty page is asked: never one too few)."""
    if pages.has_more is not None:
        said = lookup(reply, pages.has_more)
        return not isinstance(said, _Absent | dict | list) and as_text(said).lower() in (
            "false", "0"
        )  # fmt: skip
    if pages.total is not None:
        total = _count(lookup(reply, pages.total))
        return total is not None and (page_number - pages.first + 1) * listed >= total
    return False


def _count(value: object) -> int | None:
    """A count as JSON or text gives it (at most 12 digits); None otherwise."""
    text = _id_text(value)
    return int(text) if text is not None and text.isdigit() and len(text) <= 12 else None


def read_found(
    request: FindCase,
    status: int,
    body: bytes,
    what: str,
    external_key: str,
    page_number: int | None = None,
    near: MappedNearby | None = None,
) -> LookupPage:
    """One page of a lookup: the id of the listed case whose key is ours (then nothing
    else), else the next page, the possible matches ``near`` finds and the count of items
    whose key cannot be read (not an object, or a key that is neither text nor a number:
    it might be ours). Without paging, a page of ``listing_cap`` items may be cut short:
    DOUBTFUL unless ours is on it."""
    reply = read_checked(request.check, status, body, what)
    items = _items(reply, request.items, status, what)
    candidates: list[Candidate] = []
    unreadable = 0
    for item in items:
        if not isinstance(item, dict):
            unreadable += 1
            continue
        key = lookup(item, request.item_key)
        if isinstance(key, _Absent) or key is None or key == "":  # no key: not ours, maybe
            if near is not None and (found := _candidate(request, item, near)) is not None:
                candidates.append(found)
        elif (text := _id_text(key)) is None:
            unreadable += 1
        elif text == external_key:
            return LookupPage(read_case_id(item, request.item_id, status, what), None, [], 0)
    if request.next_cursor is None and request.page_numbers is None:
        if len(items) >= request.listing_cap:
            raise PlatformError(
                f"HTTP {status} on {what}: no case under {external_key!r} among"
                f" {len(items)} items, as many as listing_cap: the listing may be cut short;"
                " cannot tell whether it was filed",
                Failure.DOUBTFUL,
            )
        return LookupPage(None, None, candidates, unreadable)
    next_after = _next_page(request, reply, len(items), page_number, status, what)
    return LookupPage(None, next_after, candidates, unreadable)


def _candidate(request: FindCase, item: dict[str, Any], near: MappedNearby) -> Candidate | None:
    """What ``near`` makes of the item's id, service, place and time (None where absent)."""
    paths = near.items
    fields = {
        "id": request.item_id, "service": paths.item_service, "x": paths.item_x,
        "y": paths.item_y, "time": paths.item_time,
    }  # fmt: skip
    values = {name: lookup(item, path) for name, path in fields.items()}
    return near.candidate({k: None if v is ABSENT else v for k, v in values.items()})


def _items(reply: dict[str, Any], path: str, status: int, what: str) -> list[Any]:
    items = lookup(reply, path)
    if items is None:  # the platform says: nothing
        return []
    if not isinstance(items, list) or len(items) > MAX_PAGE_CASES:
        raise PlatformError(
            f"HTTP {status} on {what}: {path} is not a list of at most {MAX_PAGE_CASES}",
            Failure.DOUBTFUL,
        )
    return items


def _case_status(request: ChangedCases, item: object) -> CaseStatus | None:
    if not isinstance(item, dict):
        return None
    case_id = usable_case_id(_id_text(lookup(item, request.item_id)))
    code = _id_text(lookup(item, request.item_status))
    status = request.statuses.get(code) if code is not None else None
    updated = _id_text(lookup(item, request.item_updated_at))
    if case_id is None or status is None or not _short(updated):
        return None
    return CaseStatus(case_id, status, updated)


def _paging_text(reply: dict[str, Any], path: str | None, status: int, what: str) -> str | None:
    """A cursor or time the platform gives for paging: None when absent, null or empty."""
    value = lookup(reply, path) if path else None
    if isinstance(value, _Absent) or value is None or value == "":
        return None
    text = _id_text(value)
    if not _short(text):
        raise PlatformError(
            f"HTTP {status} on {what}: unusable paging at {path}: {shown(value)}",
            Failure.DOUBTFUL,
        )
    return text


def _id_text(value: object) -> str | None:
    """Ids, codes and times as text: platforms send them as text or as integers."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _short(text: str | None) -> bool:
    return text is not None and 0 < len(text) <= MAX_FIELD_CHARS


class RequestBuilder:
    """Turns our case (or evidence, or sync cursor) into a request's query and body."""

    def __init__(self, settings: MappedRestSettings) -> None:
        self._tables = settings.tables
        self.coordinates = PlatformCoordinates(settings.coordinates.system)
        self._decimals = settings.coordinates.decimals
        self._tz = ZoneInfo(settings.timezone)

    def body(
        self,
        request: Request,
        root: dict[str, Any],
        what: str,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The request's body; ``extra`` (target → value) is put in after the mapped
        fields (the settings check that no target collides)."""
        body: dict[str, Any] = {}
        for target, spec in request.body.items():
            value = self._value(f"{what} body.{target}", spec, root)
            if value is not ABSENT:
                _put(body, target, value)
        for target, value in (extra or {}).items():
            _put(body, target, value)
        return body

    def query(self, request: Request, root: dict[str, Any], what: str) -> dict[str, str]:
        return self._texts(request.query, root, f"{what} query")

    def form(self, upload: Upload, root: dict[str, Any], what: str) -> dict[str, str]:
        """An upload's form fields as text; a null or omitted value is left out."""
        return self._texts(upload.form, root, f"{what} form")

    def _texts(
        self, fields: Mapping[str, FieldSpec], root: dict[str, Any], where: str
    ) -> dict[str, str]:
        texts = {}
        for name, spec in fields.items():
            value = self._value(f"{where}.{name}", spec, root)
            if value is not ABSENT and value is not None:
                texts[name] = value if isinstance(value, str) else json.dumps(value)
        return texts

    def value(self, where: str, spec: FieldSpec, root: dict[str, Any]) -> Any:
        """What ``spec`` makes of ``root``: a value, ``ABSENT`` (omitted) or a REFUSED
        PlatformError naming ``where``."""
        return self._value(where, spec, root)

    def _value(self, where: str, spec: FieldSpec, root: dict[str, Any]) -> Any:
        if spec.coordinate is not None:
            return self._coordinate(where, spec.coordinate, root)
        if spec.from_ is None:
            return spec.const
        value = lookup(root, spec.from_)
        if isinstance(value, _Absent) or value is None or value == "":
            if spec.if_missing == "refuse":
                raise PlatformError(f"{where}: the case has no {spec.from_}", Failure.REFUSED)
            return ABSENT if spec.if_missing == "omit" else None
        if spec.table is not None:
            table = self._tables[spec.table]
            if (key := as_text(value)) not in table:
                raise PlatformError(
                    f"{where}: {spec.from_} {key[:MAX_FIELD_CHARS]!r} has no entry in"
                    f" tables.{spec.table}",
                    Failure.REFUSED,
                )
            value = table[key]
        if spec.strftime is not None:
            value = self._time(where, value, spec.strftime)
        if spec.max_chars is not None and isinstance(value, str) and len(value) > spec.max_chars:
            value = value[: spec.max_chars - 1] + "…"
        return value

    def _coordinate(self, where: str, axis: str, root: dict[str, Any]) -> float:
        lat, lon = lookup(root, "location.lat"), lookup(root, "location.lon")
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            raise PlatformError(f"{where}: the case has no location", Failure.REFUSED)
        try:
            x, y = self.coordinates.xy(float(lat), float(lon))
        except ValueError as exc:
            raise PlatformError(f"{where}: {exc}", Failure.REFUSED) from None
        return round(x if axis == "x" else y, self._decimals)

    def _time(self, where: str, value: object, pattern: str) -> str:
        """An ISO-8601 text (UTC when it names no offset) or epoch milliseconds, formatted
        in the mapping's time zone."""
        try:
            if isinstance(value, str):
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                moment = datetime.fromtimestamp(value / 1000, tz=UTC)
            else:
                raise ValueError("not a time")
            return moment.astimezone(self._tz).strftime(pattern)
        except (ValueError, OverflowError, OSError):
            raise PlatformError(f"{where}: {shown(value)} is not a time", Failure.REFUSED) from None


def _put(body: dict[str, Any], target: str, value: Any) -> None:
    """``value`` at the dotted ``target``, making the objects on the way."""
    *outer, name = target.split(".")
    node = body
    for step in outer:
        node = node.setdefault(step, {})
    node[name] = value


class MappedRestPlatform:
    """The platform ``settings`` describes. ``settings.check_class_codes`` belongs in config
    loading (it needs the gateway's class codes); a code that slips through is refused per
    case with the table named.

    ``read_evidence`` (needed when the mapping has ``upload``) gives the bytes of a media
    link of ours. ``upload_stats`` counts files ``uploaded``, links sent instead
    (``linked_<reason>``) and files refused (``refused_missing``, ``refused_changed``)."""

    def __init__(
        self, settings: MappedRestSettings, read_evidence: EvidenceReader | None = None
    ) -> None:
        if settings.upload is not None and read_evidence is None:
            raise ValueError(
                "case_platform.mapped_rest.upload: the adapter needs the gateway's evidence"
                " reader to upload files"
            )
        self._settings = settings
        self._read_evidence = read_evidence
        self.platform_id = f"mapped_rest {settings.url}"
        self.secret_forms = secret_forms([settings.auth.secret.get_secret_value()])
        self.upload_stats: Counter[str] = Counter()
        self._builder = RequestBuilder(settings)
        self._tz = ZoneInfo(settings.timezone)
        headers = {"Accept": "application/json"}
        auth = settings.auth
        if isinstance(auth, BearerAuth):
            headers["Authorization"] = f"Bearer {auth.secret.get_secret_value()}"
        elif isinstance(auth, ApiKeyAuth):
            headers[auth.header] = auth.secret.get_secret_value()
        self._hmac = auth if isinstance(auth, HmacAuth) else None
        self._client = httpx.AsyncClient(
            base_url=str(settings.url),
            headers=headers,
            timeout=settings.timeout_s,
            event_hooks={"request": [self._sign] if self._hmac is not None else []},
        )

    @property
    def honours_idempotency_key(self) -> bool:
        return self._settings.idempotency_header is not None

    @secrets_hidden
    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        request = self._settings.open_case
        what = f"{request.method} {request.path}"
        files = await self._attached_files("open_case", body, None)
        status, reply = await self._exchange(request, body, what, idempotency_key, extra=files)
        checked = read_checked(request.check, status, reply, what)
        return {"id": read_case_id(checked, request.case_id, status, what)}

    @secrets_hidden
    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        request = self._settings.add_evidence
        if request is None:
            raise PlatformError(
                f"the platform mapping has no add_evidence: evidence for case {case_id} not sent",
                Failure.REFUSED,
            )
        require_case_id(case_id)
        files = await self._attached_files("add_evidence", body, case_id)
        root = {**body, "case_id": case_id}
        return await self._to_case(request, case_id, root, idempotency_key, files)

    @secrets_hidden
    async def void_case(self, case_id: str, reason: str, idempotency_key: str) -> dict[str, Any]:
        """Voids a merged duplicate's case through the mapping's ``void_case`` endpoint;
        without one, refused with the case to void by hand. Its ``case_final`` codes say
        the case was closed or void already (the outbox counts either as done)."""
        request = self._settings.void_case
        if request is None:
            raise no_void(case_id, "the platform mapping has no void_case")
        require_case_id(case_id)
        root = {"case_id": case_id, "reason": reason}
        return await self._to_case(request, case_id, root, idempotency_key)

    async def _to_case(
        self,
        request: CaseRequest,
        case_id: str,
        root: dict[str, Any],
        idempotency_key: str,
        files: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sends ``request`` about filed case ``case_id``; its ``case_final`` codes raise
        CASE_FINAL with the status they name."""
        path = request.path.replace("{case_id}", case_id)
        what = f"{request.method} {path}"
        status, reply = await self._exchange(
            request, root, what, idempotency_key, path=path, extra=files
        )
        read_checked(request.check, status, reply, what, case_final=request.case_final)
        return {"id": case_id}

    @secrets_hidden
    async def changed_cases(self, since: str | None, after: str | None) -> CasePage:
        request = self._settings.changed_cases
        what = f"{request.method} {request.path}"
        paging: dict[str, str] = {}
        page_number = None
        if request.page_numbers is not None:
            pages = request.page_numbers
            if after is not None and not (after.isdigit() and len(after) <= 6):
                raise PlatformError(f"unusable page number {shown(after)}", Failure.REFUSED)
            page_number = int(after) if after is not None else pages.first
            paging = {pages.param: str(page_number), pages.size_param: str(pages.size)}
        status, reply = await self._exchange(
            request,
            {"since": since, "after": after},
            what,
            paging=paging,
            limit=MAX_PAGE_REPLY_BYTES,
        )
        return read_page(request, status, reply, what, page_number)

    @secrets_hidden
    async def find_case(self, external_key: str, body: dict[str, Any]) -> str | None:
        """The platform's id of the case filed for ``external_key``; None only when the
        whole listing was read, every item's key was readable and none is a possible
        match; DOUBTFUL otherwise (``FindCase``). REFUSED when the mapping has no
        ``find_case``: nobody can tell."""
        request = self._settings.find_case
        if request is None:
            raise PlatformError(
                f"the platform mapping has no find_case: whether {external_key} was filed"
                " cannot be checked; look on the platform before sending it again",
                Failure.REFUSED,
            )
        what = f"{request.method} {request.path}"
        root: dict[str, Any] = {**body, "external_key": external_key}
        near = self._nearby(request, root, what)
        pages = request.page_numbers

        async def page(after: str | None) -> LookupPage:
            page_number, paging = None, {}
            if pages is not None:  # "after" is the number read_found gave
                page_number = int(after) if after is not None else pages.first
                paging = {pages.param: str(page_number), pages.size_param: str(pages.size)}
            elif after is not None:
                root["after"] = after
            status, reply = await self._exchange(
                request, root, what, paging=paging, limit=MAX_PAGE_REPLY_BYTES
            )
            return read_found(request, status, reply, what, external_key, page_number, near)

        return await look_up_pages(page, external_key, what, request.max_pages)

    def _nearby(self, request: FindCase, root: dict[str, Any], what: str) -> MappedNearby | None:
        """What possible matches are judged against, when the mapping asks for them and
        our case has a place, a time and a service to compare."""
        if request.nearby is None:
            return None
        try:
            service = self._builder.value(f"{what} nearby.service", request.nearby.service, root)
        except PlatformError:
            return None
        return MappedNearby.of(request.nearby, self._builder.coordinates, self._tz, root, service)

    def guard_requests(self, hook: RequestHook) -> None:
        """``hook`` (the rate limit's token) runs before the request is signed: one kept
        waiting for its token is signed as it goes, so its timestamp is fresh when the
        platform checks it against its window."""
        self._client.event_hooks["request"].insert(0, hook)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _attached_files(
        self, name: str, body: dict[str, Any], case_id: str | None
    ) -> dict[str, Any]:
        """Uploads the body's files if the mapping attaches files to request ``name``;
        the body fields that then carry their ids and the links of the files not sent."""
        upload = self._settings.upload
        attach = getattr(upload, name) if upload is not None else None
        if upload is None or attach is None:
            return {}
        plan = plan_uploads(body, upload)
        for file, reason in plan.linked:
            self.upload_stats[f"linked_{reason}"] += 1
            log.warning(
                "evidence file %s not uploaded (%s, %s bytes; limit %d): its link is sent",
                file.name, reason, file.size, upload.max_file_bytes,
            )  # fmt: skip
        ids = [await self._upload(upload, file, case_id) for file in plan.uploads]
        return attachment_fields(attach, ids, [file.url for file, _ in plan.linked])

    async def _upload(self, upload: Upload, file: EvidenceFile, case_id: str | None) -> str:
        """One file, checked against its record and sent; the platform's id for it."""
        assert self._read_evidence is not None  # the constructor checks it
        data = await asyncio.to_thread(self._read_evidence, file.url)
        if (problem := file_problem(file, data)) is not None:
            self.upload_stats[f"refused_{problem[0]}"] += 1
            raise PlatformError(problem[1], Failure.REFUSED)
        assert data is not None
        try:
            file_id = await self._send_file(upload, file, data, case_id)
        except PlatformError as exc:
            if exc.failure is Failure.CASE_FINAL:
                raise
            raise PlatformError(  # nothing of the case itself was sent
                f"uploading evidence file {file.name}: {exc.reason}",
                exc.failure,
                retry_after_s=exc.retry_after_s,
                may_have_acted=False,
            ) from exc
        self.upload_stats["uploaded"] += 1
        return file_id

    async def _send_file(
        self, upload: Upload, file: EvidenceFile, data: bytes, case_id: str | None
    ) -> str:
        """The multipart request for one file, sent; the file id its reply gives. An
        upload for a filed case reads the reply with add_evidence's ``case_final``."""
        path = upload.path.replace("{case_id}", case_id) if case_id else upload.path
        what = f"{upload.method} {path}"
        evidence = self._settings.add_evidence
        case_final = evidence.case_final if case_id and evidence else None
        root = form_root(file, case_id)
        outgoing = self._client.build_request(
            upload.method,
            path,
            params=self._builder.query(upload, root, what),
            data=self._builder.form(upload, root, what),
            files={upload.file_field: (file.name, data, file.content_type)},
            timeout=upload.timeout_s or self._settings.timeout_s,
        )
        outgoing.read()  # the whole multipart body, for the signature
        status, reply = await self._send(outgoing, what, MAX_CASE_REPLY_BYTES)
        checked = read_checked(upload.check, status, reply, what, case_final=case_final)
        file_id = file_id_text(value := lookup(checked, upload.file_id))
        if file_id is None:
            found = "nothing there" if isinstance(value, _Absent) else shown(value)
            raise PlatformError(
                f"HTTP {status} on {what} without a readable file id at {upload.file_id}: {found}",
                Failure.REFUSED,
            )
        return file_id

    async def _exchange(
        self,
        request: Request,
        root: dict[str, Any],
        what: str,
        idempotency_key: str | None = None,
        *,
        path: str | None = None,
        paging: dict[str, str] | None = None,
        limit: int = MAX_CASE_REPLY_BYTES,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of a 2xx; a PlatformError for anything else."""
        params = self._builder.query(request, root, what) | (paging or {})
        content = b""
        headers = {}
        if request.method != "GET":
            content = _encode(self._builder.body(request, root, what, extra), what)
            headers["Content-Type"] = "application/json; charset=utf-8"
        if idempotency_key and self._settings.idempotency_header:
            headers[self._settings.idempotency_header] = idempotency_key
        outgoing = self._client.build_request(
            request.method, path or request.path, params=params, content=content, headers=headers
        )
        return await self._send(outgoing, what, limit)

    async def _send(self, outgoing: httpx.Request, what: str, limit: int) -> tuple[int, bytes]:
        """Sends (signed by ``_sign`` on the way); (status, body) of a 2xx, a
        PlatformError for anything else."""
        reply = await send_bounded(self._client, outgoing, what, limit)
        if not reply.success:  # hidden before the reason cuts its text
            reply = replace(reply, body=scrubbed_body(reply.body, self.secret_forms))
        return require_success(reply, what, evidence=False)

    async def _sign(self, request: httpx.Request) -> None:
        """The HMAC headers, set by the client's last request hook: after any wait for a
        token (``guard_requests``), just before the bytes go out. Every request body is
        read whole before it is sent (JSON bytes; the multipart upload is read first)."""
        assert self._hmac is not None  # only hooked with HMAC auth
        request.headers.update(_hmac_headers(self._hmac, request, request.content))


def _encode(body: dict[str, Any], what: str) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise PlatformError(
            f"{what}: the body has a value JSON cannot carry", Failure.REFUSED
        ) from None


def _hmac_headers(auth: HmacAuth, request: httpx.Request, body: bytes) -> dict[str, str]:
    now_ms = time.time_ns() // 1_000_000
    timestamp = str(now_ms if auth.timestamp_unit == "ms" else now_ms // 1000)
    nonce = secrets.token_hex(16)
    message = signed_message(request.method, request.url.raw_path, timestamp, nonce, body)
    digest = hmac.new(auth.secret.get_secret_value().encode(), message, hashlib.sha256).digest()
    signature = digest.hex() if auth.encoding == "hex" else base64.b64encode(digest).decode()
    headers = {
        auth.timestamp_header: timestamp,
        auth.nonce_header: nonce,
        auth.signature_header: signature,
    }
    if auth.key_id is not None:
        headers[auth.key_id_header] = auth.key_id
    return headers
