"""The case bridge's adapter to an Open311 GeoReport v2 server (``CasePlatform``).

- **Start-up**: ``start()`` reads ``services.json`` and, for services with metadata, their
  definitions, and checks the configuration against them: every class code's
  ``service_code`` must be offered and not ``blackbox`` (such requests get no id to
  follow), every configured attribute must be in the definition, and every required
  input attribute must be configured. ``Open311ConfigError`` names each mismatch. A
  gateway that starts while the server is down discovers at the first call instead; then
  only the class codes concerned are refused (parked with the same words).
- **Filing** (``open_case``): ``POST requests.json`` form-encoded (``open311_form``). The
  answer's ``service_request_id`` is the case id. A ``token`` answer is resolved through
  ``tokens/{token}.json``; while the server has not assigned an id, the call fails as
  transient (``token_poll_s`` later) and the token is remembered by external key, so the
  retry, or the outbox's ``find_case`` before a re-post, asks for the token again instead
  of filing twice. Tokens are kept in memory only: after a restart an unresolved token is
  lost and the outbox's lookup decides.
- **Lookup** (``find_case``): ``GET requests.json`` of the body's service since shortly
  before its evidence, matched by our key in the configured attributes (where the server
  lists them) or in the description's marker. A listing as long as ``listing_cap`` or with
  unreadable items, and no match, cannot tell: DOUBTFUL, never "not there". Nor can a
  listed request of the service within ``nearby`` of our place and first alert that
  carries no key of ours: a possible match, DOUBTFUL and named (``platform.py``).
- **Evidence** (``add_evidence``): GeoReport v2 has no method to add evidence or raise a
  priority. The adapter reads the request: closed → ``CASE_FINAL`` (the outbox files the
  alert afresh), open → acknowledged without sending (counted in ``stats``).
- **Void** (``void_case``, a merged duplicate's case): GeoReport v2 has none either; refused
  (``REFUSED``, parked) with the case to void by hand, and counted.
- **Status** (``changed_cases``): with ``updated_after`` (an extension; the bundled
  platform's face has it) one listing of the mapped services changed since the cursor,
  the next cursor ``sync_margin_s`` before the newest change seen; a listing as long as
  ``listing_cap`` is narrowed by ``end_date`` until it is whole, and the cursor moves
  only to the end of what was listed whole (``_changed_since``). Narrowing cannot drop
  requests filed before the cursor, so when they alone fill a listing, that pass follows
  the gateway's open cases by id instead (``_by_ids_instead``) rather than stall. Without
  ``updated_after``, the ids this adapter filed since start plus those ``watched_ids``
  gives (the gateway's open cases), ``IDS_PER_QUERY`` per page (fewer where
  ``listing_cap`` is lower) by ``service_request_id``.

Failures follow ``case_bridge.platform``'s kinds; the server's error codes and
descriptions are in the reason (``open311_replies``), with the api_key hidden wherever a
server echoes it (``hidden_secrets``). A request the server may already have filed (any
failure after a token came back) says so (``may_have_acted``).
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    StringConstraints,
    field_validator,
)

from case_bridge.hidden_secrets import scrubbed_body, secret_forms, secrets_hidden
from case_bridge.open311_form import BodyError, CaseField, keys_of, request_form, usable_key
from case_bridge.open311_replies import (
    AttributeSpec,
    Service,
    ServiceRequest,
    definition_reply,
    error_details,
    error_reply,
    filed_reply,
    requests_reply,
    services_reply,
    token_reply,
)
from case_bridge.platform import (
    LOOKUP_CLOCK_MARGIN_S,
    MAX_CASE_REPLY_BYTES,
    MAX_PAGE_REPLY_BYTES,
    Candidate,
    CasePage,
    CaseStatus,
    Failure,
    NearbyCase,
    NearbySettings,
    PlatformError,
    RequestHook,
    guard_client,
    lookup_since,
    nearby_of,
    no_void,
    not_found,
    parse_zoned,
    require_case_id,
    send_bounded,
    usable_case_id,
)

log = logging.getLogger(__name__)

IDS_PER_QUERY = 50  # ids per GET requests in id mode: ~3 KB of query at most
MAX_SPAN = timedelta(days=90)  # the spec's longest start_date..end_date
MAX_REMEMBERED = 10_000  # filed ids (id mode) and unresolved tokens kept in memory
# A capped status listing's window is halved at most this often, and never below
# MIN_WINDOW: past that the server has more changes in a second than it lists at once.
MAX_NARROWINGS = 24
MIN_WINDOW = timedelta(seconds=1)

ClassCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{5}$")]
ServiceCode = Annotated[str, StringConstraints(pattern=r"^[^\s/\\?#%]{1,64}$")]
AttributeCode = Annotated[str, StringConstraints(pattern=r"^[^\s\[\]&=]{1,64}$")]


class Open311Settings(BaseModel):
    """One Open311 GeoReport v2 server (``case_platform`` with ``adapter: open311``)."""

    model_config = ConfigDict(extra="forbid")
    adapter: Literal["open311"] = "open311"
    # The endpoint the spec's paths hang from: https://api.city.gov/dev/v2, or
    # http://host:port/open311/v2 on the bundled platform.
    url: HttpUrl
    api_key: SecretStr = Field(min_length=1, max_length=256)  # never shown when printed
    jurisdiction_id: str | None = Field(None, pattern=r"^[!-~]{1,128}$")
    # Our class code → the server's service_code (checked against services.json).
    services: dict[ClassCode, ServiceCode] = Field(min_length=1, max_length=1000)
    # Our case fields → the server's attribute codes; our key goes in one AND in the
    # description, so that a case whose answer was lost can be found again.
    attributes: dict[CaseField, AttributeCode] = {"external_key": "external_key"}
    updated_after: bool = False  # the server filters GET requests by updated_after
    listing_cap: int = Field(1000, ge=1, le=1000)  # most requests one listing returns
    description_chars: int = Field(4000, ge=400, le=4000)
    timeout_s: float = Field(5.0, gt=0, le=300)
    connect_timeout_s: float = Field(3.0, gt=0, le=60)
    token_poll_s: float = Field(5.0, gt=0, le=3600)
    lookup_days: float = Field(7.0, gt=0, le=90)  # lookups and the first sync look back this far
    # A lookup that misses our key looks for a possible match here (None: it does not).
    nearby: NearbySettings | None = NearbySettings()
    sync_margin_s: float = Field(5.0, ge=0, le=3600)

    @field_validator("attributes")
    @classmethod
    def _one_field_per_code(cls, value: dict[str, str]) -> dict[str, str]:
        codes = list(value.values())
        if len(set(codes)) != len(codes):
            raise ValueError("two fields mapped to one attribute code")
        return value


class Open311ConfigError(ValueError):
    """The configuration does not fit what the server offers (each mismatch named)."""


class Open311Platform:
    """``CasePlatform`` over Open311 GeoReport v2 (see the module docstring).

    ``watched_ids``: case ids whose status to follow when the server has no
    ``updated_after`` (the gateway's cases of open incidents); those this adapter filed
    since start are followed anyway."""

    honours_idempotency_key = False

    def __init__(
        self, settings: Open311Settings, watched_ids: Callable[[], Iterable[str]] | None = None
    ) -> None:
        self._settings = settings
        self._watched_ids = watched_ids
        self.platform_id = f"open311 {settings.url} {settings.jurisdiction_id or ''}".rstrip()
        self.secret_forms = secret_forms([settings.api_key.get_secret_value()])
        self._client = httpx.AsyncClient(
            base_url=str(settings.url).rstrip("/") + "/",
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        )
        self._services: dict[str, Service] | None = None  # by our class code, once known
        self._definitions: dict[str, dict[str, AttributeSpec]] = {}  # by service_code
        self._problems: dict[str, str] = {}  # by our class code
        self._tokens: dict[str, str] = {}  # external key → token without an id yet
        self._filed: dict[str, None] = {}  # ids filed here not yet seen closed (id mode)
        self._listing: list[str] = []  # id mode: the ids of the status pass in progress
        self._pass_since: str | None = None  # a pass by id for updated_after: its next cursor
        self.stats: Counter[str] = Counter()

    @secrets_hidden
    async def start(self) -> None:
        """Discover the server's services and check the configuration against them."""
        await self._discover()
        if self._problems:
            raise Open311ConfigError(
                "open311 configuration does not fit the server at "
                f"{self._settings.url}:\n" + "\n".join(sorted(set(self._problems.values())))
            )

    @secrets_hidden
    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        service = await self._service_for(body)
        try:
            form = request_form(
                body,
                idempotency_key,
                service_code=service.code,
                api_key=self._settings.api_key.get_secret_value(),
                jurisdiction_id=self._settings.jurisdiction_id,
                attributes=dict(self._settings.attributes),
                defined=self._definitions.get(service.code, {}) if service.metadata else {},
                description_chars=self._settings.description_chars,
            )
        except BodyError as exc:
            raise PlatformError(f"case body: {exc}", Failure.REFUSED) from None
        external_key = usable_key(body.get("external_key") or idempotency_key)
        if (token := self._tokens.get(external_key)) is not None:
            return await self._resolved(external_key, token)
        what = "POST requests.json"
        status, reply = await self._send("POST", "requests.json", what, form=form)
        filed = filed_reply(status, reply, what)
        if filed.service_request_id is not None:
            return self._case(filed.service_request_id, filed.notice)
        assert filed.token is not None
        _remember(self._tokens, external_key, filed.token)
        return await self._resolved(external_key, filed.token)

    @secrets_hidden
    async def find_case(self, external_key: str, body: dict[str, Any]) -> str | None:
        try:
            key = usable_key(external_key)
        except BodyError as exc:
            raise PlatformError(f"lookup: {exc}", Failure.REFUSED) from None
        if (token := self._tokens.get(key)) is not None:
            return (await self._resolved(key, token))["id"]
        service = await self._service_for(body)
        near = nearby_of(self._settings.nearby, body, service.code)
        now = datetime.now(UTC)
        end = now + timedelta(seconds=LOOKUP_CLOCK_MARGIN_S)
        since = lookup_since(
            body, max(LOOKUP_CLOCK_MARGIN_S, near.settings.window_s if near else 0)
        )
        start = parse_zoned(since) if since else now - timedelta(days=self._settings.lookup_days)
        params = {
            "service_code": service.code,
            "start_date": _iso(max(start, end - MAX_SPAN)),
            "end_date": _iso(end),
        }
        what = "GET requests.json"
        status, reply = await self._get("requests.json", what, params, MAX_PAGE_REPLY_BYTES)
        requests, skipped = requests_reply(status, reply, what)
        found = sorted((r.requested or "", r.id) for r in requests if self._filed_under(r, key))
        if found:
            if len(found) > 1:
                log.warning("open311: %d requests carry key %s: %s", len(found), key, found)
            return found[0][1]
        if len(requests) + skipped >= self._settings.listing_cap:
            raise PlatformError(
                f"{what}: {key!r} not among {len(requests)} requests listed ({skipped} "
                "unreadable, the listing may be cut short): cannot tell whether it was filed",
                Failure.DOUBTFUL,
            )
        candidates = [c for r in requests if (c := self._candidate(r, near)) is not None]
        return not_found(key, what, candidates, skipped)

    @secrets_hidden
    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        require_case_id(case_id)
        path = f"requests/{case_id}.json"
        what = f"GET {path}"
        try:
            status, reply = await self._get(path, what, {}, MAX_CASE_REPLY_BYTES)
        except PlatformError as exc:
            exc.may_have_acted = False  # only a GET: nothing went out that could act
            raise
        requests, _ = requests_reply(status, reply, what)
        request = next((r for r in requests if r.id == case_id), None)
        if request is None or request.status is None:
            shown = "not listed" if request is None else "in a status the spec does not know"
            raise PlatformError(
                f"HTTP {status} on {what}: the request is {shown}", Failure.DOUBTFUL
            )
        if request.status == "closed":
            raise PlatformError(
                f"request {case_id} is closed on the server", Failure.CASE_FINAL,
                case_status="closed",
            )  # fmt: skip
        self.stats["evidence_not_sent"] += 1  # GeoReport v2 has no way to add it
        return {"id": case_id, "service_request_id": case_id, "status": "open"}

    @secrets_hidden
    async def void_case(self, case_id: str, reason: str, idempotency_key: str) -> dict[str, Any]:
        """GeoReport v2 has no way to void a request: refused, for an operator to do."""
        self.stats["void_refused"] += 1
        raise no_void(case_id, "Open311 GeoReport v2")

    @secrets_hidden
    async def changed_cases(self, since: str | None, after: str | None) -> CasePage:
        if not self._settings.updated_after:
            return await self._watched_page(after, None)
        if after is not None:  # a pass that follows the open cases by id goes on
            return await self._watched_page(after, self._pass_since)
        started = datetime.now(UTC)
        try:
            return await self._changed_since(since)
        except _Unlistable as unlistable:
            return await self._by_ids_instead(unlistable, started)

    def guard_requests(self, hook: RequestHook) -> None:
        guard_client(self._client, hook)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- discovery ------------------------------------------------------------------

    async def _discover(self) -> None:
        what = "GET services.json"
        status, reply = await self._get("services.json", what, {}, MAX_PAGE_REPLY_BYTES)
        offered, _ = services_reply(status, reply, what)
        services: dict[str, Service] = {}
        problems: dict[str, str] = {}
        for class_code, code in self._settings.services.items():
            service = offered.get(code)
            if service is None:
                sample = ", ".join(sorted(offered)[:20]) or "none"
                problems[class_code] = (
                    f"open311.services.{class_code}: the server has no service_code {code!r}"
                    f" (it offers: {sample})"
                )
            elif service.type == "blackbox":
                problems[class_code] = (
                    f"open311.services.{class_code}: service_code {code!r} is blackbox: its"
                    " requests get no id to follow"
                )
            else:
                services[class_code] = service
        definitions = {}
        for code in sorted({s.code for s in services.values() if s.metadata}):
            path = f"services/{quote(code, safe='')}.json"
            status, reply = await self._get(path, f"GET {path}", {}, MAX_CASE_REPLY_BYTES)
            definitions[code] = definition_reply(status, reply, f"GET {path}", code)
        for class_code, service in list(services.items()):
            if service.metadata and (problem := self._misfit(service, definitions[service.code])):
                problems[class_code] = problem
                del services[class_code]
        self._services, self._definitions, self._problems = services, definitions, problems

    def _misfit(self, service: Service, defined: dict[str, AttributeSpec]) -> str | None:
        """Why the configured attributes do not fit a service's definition, or None."""
        configured = self._settings.attributes
        for field, code in configured.items():
            if code not in defined:
                return (
                    f"open311.attributes.{field}: service_code {service.code!r} has no"
                    f" attribute {code!r} (it has: {', '.join(sorted(defined)) or 'none'})"
                )
        filled = set(configured.values())
        for spec in defined.values():
            if spec.required and spec.variable and spec.code not in filled:
                return (
                    f"service_code {service.code!r} requires attribute {spec.code!r}, which"
                    " open311.attributes does not fill"
                )
        return None

    async def _service_for(self, body: dict[str, Any]) -> Service:
        class_code = body.get("class_code")
        if not isinstance(class_code, str) or class_code not in self._settings.services:
            raise PlatformError(
                f"class code {class_code!r} has no service_code in open311.services",
                Failure.REFUSED,
            )
        if self._services is None:
            await self._discover()
        assert self._services is not None
        if class_code in self._problems:
            raise PlatformError(self._problems[class_code], Failure.REFUSED)
        return self._services[class_code]

    # -- tokens, lookups, status ---------------------------------------------------------

    def _case(self, request_id: str, notice: str | None) -> dict[str, Any]:
        _remember(self._filed, request_id, None)
        return {"id": request_id, "service_request_id": request_id, "service_notice": notice}

    async def _resolved(self, external_key: str, token: str) -> dict[str, Any]:
        """The case a token stands for; transient while the server has no id for it."""
        path = f"tokens/{token}.json"
        what = f"GET {path}"
        try:
            status, reply = await self._get(path, what, {}, MAX_CASE_REPLY_BYTES, filed=True)
        except _NotFound as exc:
            if not exc.shaped:  # no Open311 answer: the endpoint itself is missing
                raise PlatformError(
                    f"{exc.error.reason} (the server answered a token but does not serve"
                    " tokens/{token}.json)",
                    Failure.REFUSED,
                    may_have_acted=True,
                ) from None
            request_id = None  # "token not found": not processed yet, as batch servers say
        else:
            request_id = token_reply(status, reply, what)
        if request_id is None:
            raise PlatformError(
                f"{what}: the server has filed the request but assigned no id yet",
                Failure.TRANSIENT,
                retry_after_s=self._settings.token_poll_s,
                may_have_acted=True,
            )
        self._tokens.pop(external_key, None)
        return self._case(request_id, None) | {"token": token}

    def _candidate(self, request: ServiceRequest, near: NearbyCase | None) -> Candidate | None:
        """A possible match: a request of our service, near our place and time, that
        carries no key of ours (one that does is another case of ours)."""
        if near is None or request.lat is None or request.lon is None or not request.requested:
            return None
        if request.service_code not in (None, near.service) or self._carries_a_key(request):
            return None
        moment = parse_zoned(request.requested)
        return near.candidate(request.id, request.lat, request.lon, moment.timestamp() * 1000)

    def _carries_a_key(self, request: ServiceRequest) -> bool:
        configured = self._settings.attributes
        codes = [configured[f] for f in ("external_key", "idempotency_key") if f in configured]
        return bool(keys_of(request.description)) or any(request.attributes.get(c) for c in codes)

    def _filed_under(self, request: ServiceRequest, key: str) -> bool:
        configured = self._settings.attributes
        codes = [configured[f] for f in ("external_key", "idempotency_key") if f in configured]
        return any(request.attributes.get(code) == key for code in codes) or (
            key in keys_of(request.description)
        )

    async def _changed_since(self, since: str | None) -> CasePage:
        """The changes since the cursor, in a window the server lists whole.

        A listing as long as ``listing_cap`` may have left changes out, so the window
        ``(since, end]`` is halved (``end_date``) until one is listed whole, at most
        ``MAX_NARROWINGS`` times. ``end_date`` bounds when a request was filed, and a
        request changes only after it was filed, so a whole listing holds every change up
        to ``end``: the cursor moves to ``end`` and no further (the rest waits for the
        next pass). A window not narrowed ends now: the cursor moves as before, to
        ``sync_margin_s`` before the newest change seen.

        Narrowing cannot drop a request filed before the cursor: every window lists it.
        When a capped listing shows ``listing_cap`` such requests, or the window cannot
        be narrowed further, no window is listed whole: ``_Unlistable``."""
        try:
            floor = parse_zoned(since) if since else None
        except ValueError:
            floor = None  # not a cursor of ours: start over from the look-back
        now = datetime.now(UTC)
        if floor is None:
            floor = now - timedelta(days=self._settings.lookup_days)
        end = now
        codes = ",".join(sorted(set(self._settings.services.values())))
        what = "GET requests.json"
        cap = self._settings.listing_cap
        for _ in range(MAX_NARROWINGS):
            params = {"updated_after": _iso(floor), "service_code": codes}
            if end < now:
                params["end_date"] = _iso(end)
            status, reply = await self._get("requests.json", what, params, MAX_PAGE_REPLY_BYTES)
            requests, skipped = requests_reply(status, reply, what)
            if len(requests) + skipped < cap:
                break
            if sum(_filed_by(r, floor) for r in requests) >= cap:
                raise _Unlistable(
                    f"{what}: {cap} requests filed before {_iso(floor)} changed since"
                    f" (listing_cap {cap}): no narrower window lists fewer",
                    floor,
                )
            end = floor + (end - floor) / 2
            if end - floor < MIN_WINDOW:
                raise _Unlistable(
                    f"{what}: {len(requests) + skipped} changes listed (listing_cap {cap})"
                    f" in windows down to {MIN_WINDOW.total_seconds():g} s after"
                    f" {_iso(floor)}: cannot list them all",
                    floor,
                )
            self.stats["sync_narrowed"] += 1
        else:
            raise _Unlistable(
                f"{what}: still capped after {MAX_NARROWINGS} narrowings of the window after"
                f" {_iso(floor)}: cannot list every change",
                floor,
            )
        cases = [CaseStatus(r.id, r.status, r.changed) for r in requests if r.status and r.changed]
        unused = skipped + len(requests) - len(cases)
        if end < now:
            return CasePage(cases, None, _iso(end), unused)
        newest = max((parse_zoned(c.updated_at) for c in cases), default=None)
        next_since = None
        if newest is not None:
            margin = timedelta(seconds=self._settings.sync_margin_s)
            next_since = _iso(max(newest - margin, floor))
        return CasePage(cases, None, next_since, unused)

    async def _by_ids_instead(self, unlistable: _Unlistable, started: datetime) -> CasePage:
        """A pass whose changes no window lists whole follows the gateway's open cases by
        id instead (``watched_ids``), so status sync never stalls on a server busy with
        requests filed before the cursor. Their statuses read whole, the next pass lists
        from when this one started (less ``sync_margin_s``; never before the cursor):
        every change to a case the gateway follows is in what this pass read. Without
        ``watched_ids`` the adapter knows only what it filed since start: DOUBTFUL."""
        if self._watched_ids is None:
            raise PlatformError(unlistable.reason, Failure.DOUBTFUL)
        self.stats["sync_by_ids"] += 1
        log.warning("open311: %s; this pass follows the open cases by id", unlistable.reason)
        margin = timedelta(seconds=self._settings.sync_margin_s)
        self._pass_since = _iso(max(started - margin, unlistable.floor))
        return await self._watched_page(None, self._pass_since)

    async def _watched_page(self, after: str | None, next_since: str | None) -> CasePage:
        """One page of the ids followed (``after``: the last id of the page before), each
        page saying ``next_since`` (None in id mode: the server lists no changes)."""
        if after is None:
            watched = self._watched_ids() if self._watched_ids else ()
            ids = {i for i in watched if usable_case_id(i) is not None} | set(self._filed)
            self._listing = sorted(ids)
        start = 0 if after is None else bisect.bisect_right(self._listing, after)
        per_query = min(IDS_PER_QUERY, self._settings.listing_cap)  # never cut short
        chunk = self._listing[start : start + per_query]
        if not chunk:
            return CasePage([], None, next_since, 0)
        what = "GET requests.json"
        params = {"service_request_id": ",".join(chunk)}
        status, reply = await self._get("requests.json", what, params, MAX_PAGE_REPLY_BYTES)
        requests, skipped = requests_reply(status, reply, what)
        asked = set(chunk)
        cases = [
            CaseStatus(r.id, r.status, r.changed or "")
            for r in requests
            if r.id in asked and r.status
        ]
        for case in cases:
            if case.status == "closed":
                self._filed.pop(case.id, None)
        more = start + per_query < len(self._listing)
        return CasePage(
            cases, chunk[-1] if more else None, next_since, skipped + len(requests) - len(cases)
        )

    # -- HTTP -------------------------------------------------------------------------

    async def _get(
        self, path: str, what: str, params: dict[str, str], limit: int, *, filed: bool = False
    ) -> tuple[int, bytes]:
        query = dict(params)
        if self._settings.jurisdiction_id is not None:
            query["jurisdiction_id"] = self._settings.jurisdiction_id
        return await self._send("GET", path, what, params=query, limit=limit, filed=filed)

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        form: list[tuple[str, str]] | None = None,
        params: dict[str, str] | None = None,
        limit: int = MAX_CASE_REPLY_BYTES,
        filed: bool = False,
    ) -> tuple[int, bytes]:
        """(status, body) of a 2xx, else a PlatformError (``filed``: the server already
        filed the request this call is about, whatever this answer says)."""
        content = urlencode(form).encode() if form is not None else None
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        request = self._client.build_request(
            method, path, content=content, params=params, headers=headers
        )
        try:
            reply = await send_bounded(self._client, request, what, limit)
        except PlatformError as error:
            if filed:  # no answer, or one too large to read: it stays filed all the same
                error.may_have_acted = True
            raise
        if reply.success:
            return reply.status, reply.body
        body = scrubbed_body(reply.body, self.secret_forms)  # before its details are cut
        error = error_reply(reply.status, body, what, reply.retry_after, may_have_acted=filed)
        if reply.status == 404 and filed:
            raise _NotFound(error, error_details(body)[1])
        raise error


class _Unlistable(Exception):
    """No window of the changes since ``floor`` is listed whole (``reason`` says why)."""

    def __init__(self, reason: str, floor: datetime) -> None:
        super().__init__(reason)
        self.reason = reason
        self.floor = floor


def _filed_by(request: ServiceRequest, moment: datetime) -> bool:
    """Whether the request was filed at or before ``moment`` (False when it does not say)."""
    try:
        return request.requested is not None and parse_zoned(request.requested) <= moment
    except ValueError:
        return False


class _NotFound(Exception):
    """A 404 about a request already filed: the caller decides what it means."""

    def __init__(self, error: PlatformError, shaped: bool) -> None:
        self.error = error
        self.shaped = shaped


def _remember(memory: dict[str, Any], key: str, value: Any) -> None:
    """Keep ``key`` (newest last), forgetting the oldest past ``MAX_REMEMBERED``."""
    memory.pop(key, None)
    memory[key] = value
    while len(memory) > MAX_REMEMBERED:
        del memory[next(iter(memory))]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
