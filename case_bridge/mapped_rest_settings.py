"""Settings of the mapped-REST adapter: how our case becomes a platform's request, and how
the platform's replies are read. ``deploy/platforms/egova.yaml`` is a worked example.

Most 数字城管 platforms have an intake API of their own, and every city's differs in field
names, nesting, code tables, result codes and auth. The adapter (``mapped_rest.py``) holds
no platform's names: this mapping does. Each request field is a ``FieldSpec``: a constant,
a value taken from our case (a dotted *source* path into the body that
``case_model.open_case_body`` builds), or the case's coordinate in the configured system;
optionally translated through a code table. Fields go to dotted *target* paths, so
``extInfo.externalKey`` builds ``{"extInfo": {"externalKey": ...}}``.

Everything that can be checked before the first case is checked when the settings load,
and each error names its field: a malformed path, a source our case does not have, a table
that does not exist, a priority or origin a table lacks, two targets that collide, a
mapping too large. Which class codes a deployment files is known only with the rest of the
gateway's config, so ``check_class_codes`` says which of them a class-code table lacks;
the config loader calls it. Bounds (paths, fields, tables, entries, text) keep a mapping
file from standing for unbounded work.

A platform that can void (作废) a case has a ``void_case`` request (``VoidCase``): a merged
duplicate's case is voided through it; without one the void is parked for a person.

A platform that takes evidence as files has an ``upload`` section (``Upload``): its
endpoint, the multipart form around the file, where its reply gives the file's id, and
where those ids (and the links of files not uploaded) go in the case and evidence bodies.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    model_validator,
)

from case_bridge.case_model import ORIGIN_NAMES
from case_bridge.coordinates import PlatformCoordinates
from case_bridge.platform import NearbySettings
from domain import Priority

MAX_SEGMENTS = 8  # nesting of a body field, depth of a reply path
MAX_BODY_FIELDS = 100
MAX_QUERY_FIELDS = 30
MAX_TABLES = 32
MAX_TABLE_ENTRIES = 5000
MAX_TEXT_CHARS = 2000  # a constant's text
MAX_KEY_CHARS = 64  # a table's key and text values, a result code
# A file uploaded as evidence: as large as the gateway keeps (gateway/evidence_settings.py).
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
MAX_UPLOAD_FILES = 20  # per request that carries them

# The statuses of our case workflow (those of the bundled platform); a platform's status
# codes translate to these. Only "closed" and "void" act: they close the incident.
CaseStatusName = Literal[
    "accepted", "registered", "dispatched", "handling", "verifying", "closed", "void"
]
Scalar = str | int | float | bool | None

_NAME = r"[A-Za-z_$@][A-Za-z0-9_$@-]{0,63}"
_TARGET_PATH = re.compile(rf"{_NAME}(?:\.{_NAME}){{0,{MAX_SEGMENTS - 1}}}")
_STEP = rf"(?:{_NAME}|[0-9]{{1,4}})"  # a reply path may index lists
_REPLY_PATH = re.compile(rf"{_STEP}(?:\.{_STEP}){{0,{MAX_SEGMENTS - 1}}}")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_REQUEST_PATH = re.compile(r"/(?:[A-Za-z0-9_.~%{}-]+/?){0,16}")


def whole(pattern: str) -> str:
    """``pattern`` for pydantic's ``Field(pattern=)``, which searches: anchored, so the
    whole value must match (unanchored, "http://elsewhere/x" passes for a path)."""
    return f"^(?:{pattern})$"


# Source paths our bodies have, per request (see case_model.py): the open-case body (also
# what find_case looks a case up by), the evidence body with the case id, the sync cursor.
# ``flag`` and ``checked_status`` are present on closure-check evidence only (map them with
# ``if_missing: omit``), so a platform can take it as a review note, not a new sighting.
_EVIDENCE_ITEM = (
    r"evidence\.[0-9]{1,2}\.(?:source_id|ts|rule_id|state|priority|summary|flag"
    r"|checked_status|media\.[0-9]{1,2}|values\.[A-Za-z0-9_]{1,64})"
)
OPEN_CASE_SOURCES = re.compile(
    r"class_code|class_name|part_code|priority|deadline|responsible_unit|description|source"
    r"|external_key"
    rf"|location\.(?:lat|lon|address|grid_code)|{_EVIDENCE_ITEM}"
)
# A lookup pages with the cursor the previous page gave (source ``after``).
FIND_CASE_SOURCES = re.compile(rf"(?:{OPEN_CASE_SOURCES.pattern})|after")
EVIDENCE_SOURCES = re.compile(rf"case_id|priority|deadline|{_EVIDENCE_ITEM}")
# A void: the platform's id of the case, and why it is void (case_bridge/dispatcher.py
# ``void_reason``: "作废: merged as a duplicate into another case (...)").
VOID_SOURCES = re.compile(r"case_id|reason")
CHANGED_CASES_SOURCES = re.compile(r"since|after")
# What an upload's form and query may carry: the file's recorded hash and size, its content
# type and name, and the case's id when the upload is for a filed case (add_evidence).
UPLOAD_SOURCES = re.compile(r"sha256|bytes|content_type|file_name|case_id")
# Tables applied to these sources must cover every value our cases can carry.
KNOWN_VALUES: dict[str, frozenset[str]] = {
    "priority": frozenset(str(p) for p in Priority),
    "source": frozenset(ORIGIN_NAMES),
}


def _dotted(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(
                f"{what} must be a dotted path of at most {MAX_SEGMENTS} names (letters,"
                f" digits, _ $ @ -), got {value[:80]!r}"
            )
        return value

    return AfterValidator(check)


TargetPath = Annotated[str, _dotted(_TARGET_PATH, "a request field")]
ReplyPath = Annotated[str, _dotted(_REPLY_PATH, "a reply path")]
HeaderName = Annotated[str, Field(pattern=whole(_HEADER.pattern))]
ShortText = Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS)]


def _text_keys(value: Any) -> Any:
    """Table keys must be YAML text: unquoted, 06010 reads as the octal number 3080."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(
                    f"key {key!r} is not text: quote codes in YAML ('06010'; unquoted, a"
                    " leading 0 reads as an octal number)"
                )
    return value


TableValue = Annotated[str, Field(max_length=MAX_KEY_CHARS)] | int | float | bool
CodeTable = Annotated[
    dict[ShortText, TableValue],
    BeforeValidator(_text_keys),
    Field(min_length=1, max_length=MAX_TABLE_ENTRIES),
]


def as_text(value: object) -> str:
    """How a code, a result value or a status is compared: 0 and "0" are the same code."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


class FieldSpec(BaseModel):
    """One field of a request: exactly one of ``const``, ``from`` or ``coordinate``.

    - ``const``: a fixed value (text, number, true/false, null).
    - ``from``: a source path into our case body; ``table`` translates the value through
      one of ``tables`` (compared as text); ``strftime`` formats a time (an ISO-8601 text
      or epoch milliseconds) in the mapping's ``timezone``; ``max_chars`` cuts long text
      (ending in "…"). A source that is absent, null or empty text is *missing*, and
      ``if_missing`` says what then: ``refuse`` (the command is parked with the reason),
      ``omit`` (leave the field out) or ``null`` (send null).
    - ``coordinate``: ``x`` or ``y`` of the case's location in ``coordinates.system``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    const: Scalar = None
    from_: str | None = Field(None, alias="from", max_length=200)
    coordinate: Literal["x", "y"] | None = None
    table: str | None = Field(None, max_length=MAX_KEY_CHARS)
    if_missing: Literal["refuse", "omit", "null"] = "refuse"
    max_chars: int | None = Field(None, ge=1, le=100_000)
    strftime: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_kind(self) -> FieldSpec:
        given = [k for k in ("const", "from_", "coordinate") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("give exactly one of const, from, coordinate")
        if isinstance(self.const, str) and len(self.const) > MAX_TEXT_CHARS:
            raise ValueError(f"const: text longer than {MAX_TEXT_CHARS} characters")
        if self.from_ is None:
            options = ("table", "max_chars", "strftime", "if_missing")
            if extra := [k for k in options if k in self.model_fields_set]:
                raise ValueError(f"{', '.join(extra)} apply only to a field given by from")
        return self


Fields = Annotated[
    dict[TargetPath, FieldSpec],
    Field(max_length=MAX_BODY_FIELDS),
]
# A query parameter's or form field's name.
ParamName = Annotated[str, Field(pattern=whole(r"[A-Za-z0-9_.\[\]-]{1,64}"))]
QueryFields = Annotated[dict[ParamName, FieldSpec], Field(max_length=MAX_QUERY_FIELDS)]


class ResultCheck(BaseModel):
    """Many Chinese platforms answer HTTP 200 for everything and put the outcome in a
    result code (``{"code": 0, "msg": "success", "data": ...}``). Values are compared as
    text. A code in ``refused`` parks the command and one in ``transient`` is retried: list
    only codes by which the platform says it did nothing. Any other code that is not
    ``success`` is doubtful (retried a few times, then parked): the platform may have
    acted, so on a platform without idempotency keys the case is looked up first."""

    model_config = ConfigDict(extra="forbid")
    path: ReplyPath
    success: list[Scalar] = Field(min_length=1, max_length=20)
    refused: list[Scalar] = Field(default_factory=list, max_length=100)
    transient: list[Scalar] = Field(default_factory=list, max_length=100)
    message_path: ReplyPath | None = None

    @model_validator(mode="after")
    def _disjoint(self) -> ResultCheck:
        lists = {"success": self.success, "refused": self.refused, "transient": self.transient}
        seen: dict[str, str] = {}
        for name, values in lists.items():
            for value in values:
                if (other := seen.setdefault(as_text(value), name)) != name:
                    raise ValueError(f"result {as_text(value)!r} is in both {other} and {name}")
        return self


class Request(BaseModel):
    """An endpoint: method, path (under the base URL), query parameters and JSON body."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["GET", "POST", "PUT", "PATCH"]
    path: Annotated[str, Field(max_length=256, pattern=whole(_REQUEST_PATH.pattern))]
    query: QueryFields = Field(default_factory=dict)
    body: Fields = Field(default_factory=dict)
    check: ResultCheck | None = None

    @model_validator(mode="after")
    def _shape(self) -> Request:
        if self.method == "GET" and self.body:
            raise ValueError("a GET request has no body: use query")
        if ".." in self.path.split("/"):
            raise ValueError("path: '..' is not allowed")
        placeholders = re.findall(r"\{([^{}]*)\}", self.path)
        allowed = {"case_id"} if isinstance(self, CaseRequest | Upload) else set()
        braces = self.path.count("{") + self.path.count("}")
        if braces != 2 * len(placeholders) or not set(placeholders) <= allowed:
            raise ValueError(
                "path: the only placeholder is {case_id}, in add_evidence, void_case and upload"
            )
        _check_targets(self.body, "body")
        return self

    def specs(self) -> Iterator[tuple[str, FieldSpec]]:
        for name, spec in self.query.items():
            yield f"query.{name}", spec
        for target, spec in self.body.items():
            yield f"body.{target}", spec


class OpenCase(Request):
    """Filing a case: ``case_id`` is where the new case's id is in the reply."""

    case_id: ReplyPath


class CaseRequest(Request):
    """A request about a filed case: the source ``case_id`` (and ``{case_id}`` in the
    path) is the platform's id of the case. ``case_final``: result codes meaning the case
    is already closed or void (needs ``check``)."""

    case_final: dict[ShortText, Literal["closed", "void"]] = Field(
        default_factory=dict, max_length=20
    )

    @model_validator(mode="after")
    def _final_needs_check(self) -> CaseRequest:
        if self.case_final and self.check is None:
            raise ValueError("case_final needs check (where the result code is)")
        return self


class AddEvidence(CaseRequest):
    """Evidence, a repeat or an escalation for a filed case."""


class VoidCase(CaseRequest):
    """Voiding (作废) the case of a duplicate an operator merged into another case.
    Sources: ``case_id`` and ``reason`` (the note the void carries). A ``case_final`` code
    says the case is closed or void already: the void is done (nothing is handled twice),
    so a void sent again after a lost answer is harmless."""


class PageNumbers(BaseModel):
    """Paging by page number: ``after`` is the page to ask for.

    Many platforms cap the page size silently (``size`` 50 asked, 20 listed), so a page
    shorter than ``size`` says nothing about what follows: only an empty page ends the
    listing, unless the reply says so itself. ``total``: where a reply gives how many
    items the whole listing holds (the listing ends once the pages read, each as long as
    this one, hold that many); ``has_more``: where it says whether another page follows
    (true/false, 1/0). A reply that lacks the field, or gives an unusable value, says
    nothing: the next page is asked for."""

    model_config = ConfigDict(extra="forbid")
    param: Annotated[str, Field(pattern=whole(r"[A-Za-z0-9_.-]{1,64}"))]
    size_param: Annotated[str, Field(pattern=whole(r"[A-Za-z0-9_.-]{1,64}"))]
    size: int = Field(100, ge=1, le=1000)
    first: int = Field(1, ge=0, le=1)
    total: ReplyPath | None = None
    has_more: ReplyPath | None = None

    @model_validator(mode="after")
    def _one_end(self) -> PageNumbers:
        if self.total is not None and self.has_more is not None:
            raise ValueError("give total or has_more, not both")
        return self


class Listing(Request):
    """A listing of the platform's cases, read page by page: ``items`` is where a reply
    lists them (null means none) and ``item_id`` each one's id. Paging: ``next_cursor``
    (where the reply gives the next page's cursor, passed back as the source ``after``;
    null or empty on the last page) or ``page_numbers`` (an empty page, or the reply's
    ``total`` or ``has_more``, ends it); with neither, one page is the whole answer."""

    items: ReplyPath
    item_id: ReplyPath
    next_cursor: ReplyPath | None = None
    page_numbers: PageNumbers | None = None

    @model_validator(mode="after")
    def _one_paging(self) -> Listing:
        if self.next_cursor is not None and self.page_numbers is not None:
            raise ValueError("give next_cursor or page_numbers, not both")
        pages = self.page_numbers
        if pages is not None and {pages.param, pages.size_param} & set(self.query):
            raise ValueError("page_numbers sets its own parameters: leave them out of query")
        return self


class ChangedCases(Listing):
    """Cases changed since a time (sources ``since`` and ``after``), for status sync.

    Each listed item gives its id, its status code (translated by ``statuses``; an item
    with a code the table lacks is skipped and counted) and when it changed (compared as
    text: give a fixed-width time or epoch number). ``next_since``: where in the reply the
    platform says to list from next time.
    """

    item_status: ReplyPath
    item_updated_at: ReplyPath
    statuses: dict[ShortText, CaseStatusName] = Field(min_length=1, max_length=200)
    next_since: ReplyPath | None = None


class NearbyItems(NearbySettings):
    """Where a listed item gives what a possible match is judged by (``platform.py``):
    its place (``item_x``/``item_y`` in the mapping's ``coordinates.system``), its time
    (``item_time``: ISO 8601, epoch ms, or text in ``time_format``, a strptime pattern
    read in the mapping's ``timezone``) and its service (``item_service``), compared as
    text with what ``service`` makes of our case (e.g. ``{from: class_code, table:
    sub_type}``). Items whose key is another of ours are never candidates."""

    item_x: ReplyPath
    item_y: ReplyPath
    item_time: ReplyPath
    time_format: str | None = Field(None, min_length=2, max_length=64)
    item_service: ReplyPath
    service: FieldSpec


class FindCase(Listing):
    """Looking a case up by our external key (after an ambiguous failure, before posting
    again). Sources: the open-case body, and ``after`` (the cursor) when paging by
    ``next_cursor``. Only an item whose ``item_key`` equals our external key counts: a
    platform that ignores an unknown filter lists other cases, page after page.

    "Not there" is answered only after the whole listing was read: at most ``max_pages``
    pages (a cursor, or a page-numbered page that is not empty and not said to be the
    last, means another), and without paging a page shorter than ``listing_cap`` (one
    that long may be cut short).
    A listing read only in part, or with an item whose key cannot be read, answers
    DOUBTFUL: the command is not filed again. ``nearby``: also look among the listed items
    for a possible match (DOUBTFUL, parked for an operator); it sees what the listing
    lists, so list the service's recent cases for it, not only those under our key."""

    item_key: ReplyPath
    max_pages: int = Field(10, ge=1, le=50)
    listing_cap: int = Field(100, ge=1, le=1000)
    nearby: NearbyItems | None = None

    @model_validator(mode="after")
    def _cursor_sent(self) -> FindCase:
        """The cursor goes back in a field, left out of the first page's request."""
        cursor = [(where, spec) for where, spec in self.specs() if spec.from_ == "after"]
        if self.next_cursor is not None and not cursor:
            raise ValueError("next_cursor: pass the cursor back with a field {from: after}")
        for where, spec in cursor:
            if spec.if_missing == "refuse":
                raise ValueError(f"{where}: the first page has no cursor: give if_missing: omit")
        return self

    def specs(self) -> Iterator[tuple[str, FieldSpec]]:
        yield from super().specs()
        if self.nearby is not None:
            yield "nearby.service", self.nearby.service


class Attach(BaseModel):
    """Where one request (open_case or add_evidence) carries its evidence files: ``ids``
    takes the uploaded files' ids, ``links`` the signed links of files not uploaded (too
    large, without a recorded hash, or past ``max_files``): each a list, or one text with
    the values joined by ``join``. A target with nothing to carry is left out."""

    model_config = ConfigDict(extra="forbid")
    ids: TargetPath
    links: TargetPath | None = None
    join: Annotated[str, Field(min_length=1, max_length=8, pattern=whole("[ -~]+"))] | None = None


class Upload(Request):
    """Evidence files sent to the platform before the case or evidence that names them.

    Each file goes alone, as ``multipart/form-data``: the ``form`` fields (sources
    ``sha256``, ``bytes``, ``content_type``, ``file_name`` and, for add_evidence,
    ``case_id``; also usable in ``query``), then the file in the part ``file_field``. A
    2xx that passes ``check`` gives the file's id (or URL) at ``file_id``; ``open_case``
    and ``add_evidence`` say where the ids go. ``path`` may hold ``{case_id}`` only when
    uploads are for add_evidence alone: a case being filed has no id yet. A file larger
    than ``max_file_bytes`` is not uploaded (its link goes instead); ``timeout_s``
    defaults to the mapping's."""

    method: Literal["POST", "PUT"] = "POST"
    file_field: ParamName = "file"
    form: QueryFields = Field(default_factory=dict)
    file_id: ReplyPath
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=MAX_UPLOAD_BYTES)
    max_files: int = Field(4, ge=1, le=MAX_UPLOAD_FILES)
    timeout_s: float | None = Field(None, gt=0, le=600)
    open_case: Attach | None = None
    add_evidence: Attach | None = None

    @model_validator(mode="after")
    def _upload_shape(self) -> Upload:
        if self.body:
            raise ValueError("an upload is multipart/form-data: give its fields in form, not body")
        if self.file_field in self.form:
            raise ValueError(f"form.{self.file_field}: that name is the file's (file_field)")
        if self.open_case is None and self.add_evidence is None:
            raise ValueError("say where the uploaded files go: open_case, add_evidence or both")
        if self.open_case is None:
            return self
        if "{case_id}" in self.path:
            raise ValueError(
                "open_case: the path names {case_id}, which a case being filed has not got"
                " yet: attach uploads to add_evidence only"
            )
        for where, spec in self.specs():
            if spec.from_ == "case_id" and spec.if_missing == "refuse":
                raise ValueError(
                    f"{where}: a case being filed has no case_id yet: give if_missing: omit,"
                    " or attach uploads to add_evidence only"
                )
        return self

    def specs(self) -> Iterator[tuple[str, FieldSpec]]:
        yield from super().specs()
        for name, spec in self.form.items():
            yield f"form.{name}", spec


class BearerAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["bearer"]
    secret: SecretStr = Field(min_length=1)  # the token


class ApiKeyAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["api_key"]
    header: HeaderName = "X-API-Key"
    secret: SecretStr = Field(min_length=1)  # the key


class HmacAuth(BaseModel):
    """HMAC-SHA256 over the request as sent; ``mapped_rest.signed_message`` says exactly
    which bytes."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["hmac_sha256"]
    secret: SecretStr = Field(min_length=16)
    key_id: str | None = Field(None, min_length=1, max_length=128, pattern=whole("[ -~]+"))
    key_id_header: HeaderName = "X-Key-Id"
    timestamp_header: HeaderName = "X-Timestamp"
    nonce_header: HeaderName = "X-Nonce"
    signature_header: HeaderName = "X-Signature"
    timestamp_unit: Literal["ms", "s"] = "ms"
    encoding: Literal["hex", "base64"] = "hex"


class CoordinateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str = "wgs84"  # wgs84 | gcj02 | bd09 | EPSG:<projected code>
    decimals: int = Field(6, ge=0, le=10)

    @model_validator(mode="after")
    def _known(self) -> CoordinateSettings:
        PlatformCoordinates(self.system)  # its ValueError names what is wrong
        return self


class MappedRestSettings(BaseModel):
    """``case_platform`` for a platform with its own REST API (``adapter: mapped_rest``)."""

    model_config = ConfigDict(extra="forbid")
    adapter: Literal["mapped_rest"] = "mapped_rest"
    url: HttpUrl  # the endpoints' paths hang from it
    timeout_s: float = Field(5.0, gt=0, le=120)
    auth: BearerAuth | ApiKeyAuth | HmacAuth = Field(discriminator="type")
    # Sent with each command's idempotency key, for a platform that honours one.
    idempotency_header: HeaderName | None = None
    timezone: str = "Asia/Shanghai"  # for strftime fields
    coordinates: CoordinateSettings = CoordinateSettings()
    tables: Annotated[dict[ShortText, CodeTable], Field(max_length=MAX_TABLES)] = Field(
        default_factory=dict
    )
    open_case: OpenCase
    add_evidence: AddEvidence | None = None
    changed_cases: ChangedCases
    find_case: FindCase | None = None
    void_case: VoidCase | None = None  # without it, a void is parked for a person
    upload: Upload | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MappedRestSettings:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone[:64]!r}") from None
        for name, request, sources in self._requests():
            for where, spec in request.specs():
                self._check_spec(f"{name}.{where}", spec, sources)
        if self.upload is not None:
            self._check_attached(self.upload)
        return self

    def _check_attached(self, upload: Upload) -> None:
        """Each request that carries files exists, has a body, and has room for them."""
        for name in ("open_case", "add_evidence"):
            attach: Attach | None = getattr(upload, name)
            if attach is None:
                continue
            request: Request | None = getattr(self, name)
            where = f"upload.{name}"
            if request is None:
                raise ValueError(f"{where}: the mapping has no {name} to carry the files")
            if request.method == "GET":
                raise ValueError(f"{where}: {name} is a GET, which has no body for the files")
            targets = [*request.body, attach.ids, *([attach.links] if attach.links else [])]
            if twice := sorted({t for t in targets if targets.count(t) > 1}):
                raise ValueError(f"{where}: {twice[0]} is set twice ({name}.body and {where})")
            _check_targets(targets, f"{name}.body with {where}")

    def _requests(self) -> Iterator[tuple[str, Request, re.Pattern[str]]]:
        yield "open_case", self.open_case, OPEN_CASE_SOURCES
        if self.add_evidence is not None:
            yield "add_evidence", self.add_evidence, EVIDENCE_SOURCES
        yield "changed_cases", self.changed_cases, CHANGED_CASES_SOURCES
        if self.find_case is not None:
            yield "find_case", self.find_case, FIND_CASE_SOURCES
        if self.void_case is not None:
            yield "void_case", self.void_case, VOID_SOURCES
        if self.upload is not None:
            yield "upload", self.upload, UPLOAD_SOURCES

    def _check_spec(self, field: str, spec: FieldSpec, sources: re.Pattern[str]) -> None:
        if spec.coordinate is not None and sources not in (OPEN_CASE_SOURCES, FIND_CASE_SOURCES):
            raise ValueError(f"{field}: this request has no location for a coordinate")
        if spec.from_ is None:
            return
        if not sources.fullmatch(spec.from_):
            raise ValueError(f"{field}.from: our case has no {spec.from_[:80]!r} here")
        if spec.table is None:
            return
        table = self.tables.get(spec.table)
        if table is None:
            known = ", ".join(sorted(self.tables)) or "none"
            raise ValueError(f"{field}.table: no table {spec.table!r} (tables: {known})")
        known_values = KNOWN_VALUES.get(spec.from_, frozenset())
        if missing := sorted(known_values - set(table)):
            raise ValueError(
                f"{field}: tables.{spec.table} has no entry for {spec.from_} {', '.join(missing)}"
            )

    def check_class_codes(self, codes: Mapping[str, str]) -> None:
        """``ValueError`` naming each class code the gateway may file (``codes``: the
        config key that sets it → the code) that a table applied to ``class_code``
        lacks; such a case could only be parked."""
        problems = []
        for name, request, _sources in self._requests():
            for where, spec in request.specs():
                if spec.from_ != "class_code" or spec.table is None:
                    continue
                table = self.tables[spec.table]
                problems += [
                    f"{key}: class code {code} has no entry in tables.{spec.table}"
                    f" (used by {name}.{where})"
                    for key, code in codes.items()
                    if code not in table
                ]
        if problems:
            raise ValueError("; ".join(problems))


def _check_targets(targets: Collection[str], where: str) -> None:
    """Two targets collide when one is inside the other (``a`` and ``a.b``)."""
    for target in targets:
        parts = target.split(".")
        for end in range(1, len(parts)):
            if (outer := ".".join(parts[:end])) in targets:
                raise ValueError(f"{where}: {outer} and {target} cannot both be set")
