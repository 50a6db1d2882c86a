"""The bundled platform's Open311 GeoReport v2 face, beside its own API, under ``/open311/v2``.

Testers drive either adapter of the case bridge against one platform: a request filed here
is a case of the same store and workflow as the native API's (受理→立案→派遣→处置→核查→结案),
so an operator moves it with the native API and an Open311 client sees it open or closed.

Routes (``.json`` only): ``GET services.json`` (our class codes, named from
``case_bridge.codes``), ``GET services/{code}.json`` (the attributes in ``ATTRIBUTES``),
``POST requests.json`` (form-encoded; ``api_key`` is the platform's token, else 403),
``GET requests.json`` (``service_request_id``, ``service_code``, ``status``, ``start_date``,
``end_date``; and the extension ``updated_after``: requests whose ``updated_datetime`` is at
or after it, oldest change first, so a client can follow changes), ``GET requests/{id}.json``
and ``GET tokens/{token}.json``. With ``Open311Options.token_answers`` a POST answers a
token only, as batch servers do; the token gives its ``service_request_id`` once
``token_delay_s`` have passed since filing (before that ``[{"token": ...}]`` without an id).

Statuses: ``closed`` and ``void`` are Open311 ``closed``, every other step ``open``; the
step itself (and its last history note) is in ``status_notes``. Each request also carries
its attributes as an extension (``attributes``: code → value), so a client can match its
own key. Errors are Open311's ``[{"code", "description"}]`` with code = HTTP status, for
every path under the prefix.

Deviations on purpose: JSON only (``.xml`` gets a 400 that says so); ``lat`` and ``long``
are required (cases are mapped), ``address_id`` is refused; a description holds at most
the native 2,000 characters (the spec allows 4,000); unknown parameters are refused so a
misspelt field fails loudly. Bounds: a body of ``MAX_FORM_BYTES`` and ``MAX_FORM_FIELDS``
fields, ``MAX_QUERY_IDS`` ids or service codes per query, ``MAX_LISTED`` requests per
listing, a date range of ``MAX_SPAN`` (the spec's 90 days, also the default window).
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from case_bridge.codes import ClassCatalog
from case_bridge.settings import CaseSettings
from simulators.platform import clock
from simulators.platform.schemas import CaseCreate, Priority, Source
from simulators.platform.store import Case, CaseNotFound, CaseStore
from simulators.platform.workflow import FINAL_STATUSES, STATUS_NAMES

OPEN311_PREFIX = "/open311/v2"
MAX_FORM_BYTES = 64 * 1024  # a 4,000-character CJK description is ~36 KB form-encoded
MAX_FORM_FIELDS = 64
MAX_FIELD_CHARS = 4000
MAX_QUERY_IDS = 100
MAX_LISTED = 1000  # the spec's default limit of a listing
MAX_SPAN = timedelta(days=90)
MAX_DEVICE_IDS = 19  # one evidence item each, plus the media item: the native 20 per request
MAX_URL_CHARS = 2000
TOKEN_PREFIX = "T-"

_PRIORITY_NAMES = {"critical": "特急", "urgent": "紧急", "normal": "一般", "low": "低"}
_SOURCE_NAMES = {"iot": "物联网感知", "video": "视频智能识别", "manual": "人工上报"}
# Contact fields of the spec: accepted within bounds, not stored (no personal data kept).
_IGNORED_FIELDS = frozenset(
    {"email", "device_id", "account_id", "first_name", "last_name", "phone"}
)
_POST_FIELDS = frozenset(
    {"api_key", "jurisdiction_id", "service_code", "lat", "long", "address_string",
     "address_id", "description", "media_url"}
) | _IGNORED_FIELDS  # fmt: skip
_LIST_PARAMS = frozenset(
    {"jurisdiction_id", "api_key", "service_request_id", "service_code", "status",
     "start_date", "end_date", "updated_after"}
)  # fmt: skip
_OPEN311_STATUSES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute of every service's definition; ``values`` for a list (key → name)."""

    code: str
    datatype: str
    description: str
    max_chars: int = 128
    values: dict[str, str] | None = None


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("external_key", "string",
              "The reporter's own key for this problem: the request can be found by it."),
    Attribute("device_ids", "string",
              f"Comma-separated ids of the devices or cameras that saw it (at most"
              f" {MAX_DEVICE_IDS}).", max_chars=512),
    Attribute("priority", "singlevaluelist", "How urgent (default normal).",
              values={p: _PRIORITY_NAMES[p] for p in get_args(Priority)}),
    Attribute("source", "singlevaluelist", "Who found it (default manual).",
              values={s: _SOURCE_NAMES[s] for s in get_args(Source)}),
    Attribute("deadline", "datetime",
              "When it must be handled, ISO 8601 with zone (default: by priority)."),
    Attribute("part_code", "string", "The 17-digit (or older 16-digit) part id.", max_chars=17),
    Attribute("grid_code", "string", "The unit grid (单元网格) code.", max_chars=32),
)  # fmt: skip
_ATTRIBUTES = {attribute.code: attribute for attribute in ATTRIBUTES}

# Where a native field's validation error came from, in Open311's parameter names.
_PARAM_OF = {
    "class_code": "service_code",
    "part_code": "attribute[part_code]",
    "priority": "attribute[priority]",
    "deadline": "attribute[deadline]",
    "location.lat": "lat",
    "location.lon": "long",
    "location.address": "address_string",
    "location.grid_code": "attribute[grid_code]",
    "description": "description",
    "source": "attribute[source]",
    "evidence": "attribute[device_ids]",
    "external_key": "attribute[external_key]",
}


@dataclass(frozen=True, slots=True)
class Open311Options:
    """How the face behaves: the jurisdiction it serves (None: ignore the parameter, as
    the spec allows a single-jurisdiction server) and whether a POST answers a token."""

    jurisdiction_id: str | None = None
    token_answers: bool = False
    token_delay_s: float = 0.0


class Open311Error(Exception):
    """One or more errors answered as ``[{"code", "description"}]`` with ``status``."""

    def __init__(self, status: int, *descriptions: str) -> None:
        super().__init__("; ".join(descriptions))
        self.status = status
        self.descriptions = descriptions


async def _open311_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Open311Error)
    errors = [{"code": exc.status, "description": text} for text in exc.descriptions]
    return JSONResponse(errors, status_code=exc.status)


def install_open311(
    app: FastAPI, store: CaseStore, token: str, options: Open311Options | None = None
) -> None:
    """Serve the face on ``app`` over ``store``; ``token`` is the ``api_key`` of writes."""
    app.add_exception_handler(Open311Error, _open311_error)
    app.include_router(_routes(store, token, options or Open311Options()))


def _routes(store: CaseStore, token: str, options: Open311Options) -> APIRouter:
    catalog = ClassCatalog(CaseSettings().local_classes)
    deadlines_h = CaseSettings().deadlines_h
    router = APIRouter(prefix=OPEN311_PREFIX)

    def jurisdiction(value: str | None) -> None:
        served = options.jurisdiction_id
        if served is not None and value and value != served:
            raise Open311Error(404, f"jurisdiction_id {_shown(value)} not found")

    def service(code: str) -> dict[str, Any]:
        name = catalog.name(code)
        return {
            "service_code": code,
            "service_name": name,
            "description": f"{code} {name}",
            "metadata": True,
            "type": "batch" if options.token_answers else "realtime",
            "keywords": None,
            "group": None,
        }

    @router.get("/services.{fmt}")
    def services(fmt: str, request: Request) -> JSONResponse:
        _json_format(fmt)
        jurisdiction(_query(request, {"jurisdiction_id", "api_key"}).get("jurisdiction_id"))
        return JSONResponse([service(code) for code in catalog])

    @router.get("/services/{code}.{fmt}")
    def definition(code: str, fmt: str, request: Request) -> JSONResponse:
        _json_format(fmt)
        jurisdiction(_query(request, {"jurisdiction_id", "api_key"}).get("jurisdiction_id"))
        if code not in catalog:
            raise Open311Error(404, f"service_code {_shown(code)} not found")
        return JSONResponse({"service_code": code, "attributes": _definitions()})

    @router.post("/requests.{fmt}")
    async def file_request(fmt: str, request: Request) -> JSONResponse:
        _json_format(fmt)
        fields, attributes = await _form(request)
        presented = fields.pop("api_key", None) or request.query_params.get("api_key", "")
        if not secrets.compare_digest(presented.encode(), token.encode()):
            raise Open311Error(403, "api_key missing or invalid")
        jurisdiction(fields.pop("jurisdiction_id", None))
        now = clock.now()
        new = _case_create(fields, attributes, catalog, deadlines_h, now)
        case, _ = store.create(new, None)
        hours = (clock.parse_iso(case["deadline"]) - now).total_seconds() / 3600
        notice = f"to be handled within {hours:.0f} h ({case['priority']})"
        answer: dict[str, Any] = {"service_notice": notice}  # no accounts: no account_id
        if options.token_answers:
            answer = {"token": TOKEN_PREFIX + case["id"], **answer}
        else:
            answer = {"service_request_id": case["id"], **answer}
        return JSONResponse([answer])

    @router.get("/requests.{fmt}")
    def list_requests(fmt: str, request: Request) -> JSONResponse:
        _json_format(fmt)
        query = _query(request, _LIST_PARAMS)
        jurisdiction(query.get("jurisdiction_id"))
        return JSONResponse([_view(case) for case in _listing(store, query)])

    @router.get("/requests/{request_id}.{fmt}")
    def one_request(request_id: str, fmt: str, request: Request) -> JSONResponse:
        _json_format(fmt)
        jurisdiction(_query(request, {"jurisdiction_id", "api_key"}).get("jurisdiction_id"))
        try:
            return JSONResponse([_view(store.get(request_id))])
        except CaseNotFound:
            raise Open311Error(404, f"service_request_id {_shown(request_id)} not found") from None

    @router.get("/tokens/{token_id}.{fmt}")
    def resolve_token(token_id: str, fmt: str, request: Request) -> JSONResponse:
        _json_format(fmt)
        jurisdiction(_query(request, {"jurisdiction_id", "api_key"}).get("jurisdiction_id"))
        try:
            case = store.get(token_id.removeprefix(TOKEN_PREFIX))
        except CaseNotFound:
            case = None
        if case is None or not token_id.startswith(TOKEN_PREFIX):
            raise Open311Error(404, f"token {_shown(token_id)} not found")
        filed = clock.parse_iso(case["created_at"])
        if clock.now() - filed < timedelta(seconds=options.token_delay_s):
            return JSONResponse([{"token": token_id}])  # known, no id assigned yet
        return JSONResponse([{"service_request_id": case["id"], "token": token_id}])

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def unknown(rest: str) -> None:
        raise Open311Error(404, f"no such resource: {_shown(rest)}")

    return router


def _shown(value: str) -> str:
    return repr(value if len(value) <= 64 else value[:61] + "...")


def _json_format(fmt: str) -> None:
    if fmt != "json":
        raise Open311Error(400, f"format {_shown(fmt)} is not served here; use .json")


def _definitions() -> list[dict[str, Any]]:
    return [
        {
            "variable": True,
            "code": attribute.code,
            "datatype": attribute.datatype,
            "required": False,
            "datatype_description": None,
            "order": order,
            "description": attribute.description,
            **(
                {"values": [{"key": k, "name": n} for k, n in attribute.values.items()]}
                if attribute.values
                else {}
            ),
        }
        for order, attribute in enumerate(ATTRIBUTES, start=1)
    ]


def _query(request: Request, allowed: frozenset[str] | set[str]) -> dict[str, str]:
    """The query's parameters, each at most once and known; empty ones count as absent."""
    params: dict[str, str] = {}
    items = request.query_params.multi_items()
    if len(items) > MAX_FORM_FIELDS:
        raise Open311Error(400, f"more than {MAX_FORM_FIELDS} query parameters")
    for name, value in items:
        if name not in allowed:
            raise Open311Error(400, f"unknown parameter {_shown(name)}")
        if name in params:
            raise Open311Error(400, f"{name}: given more than once")
        if len(value) > MAX_FIELD_CHARS:
            raise Open311Error(400, f"{name}: longer than {MAX_FIELD_CHARS} characters")
        if value:
            params[name] = value
    return params


async def _form(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    """A POST's form fields and its ``attribute[code]`` values, bounded and checked."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Open311Error(400, "POST requests takes application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Open311Error(413, f"request body larger than {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS)  # fmt: skip
    except UnicodeDecodeError:
        raise Open311Error(400, "request body is not UTF-8") from None
    except ValueError:
        raise Open311Error(400, f"more than {MAX_FORM_FIELDS} form fields") from None
    fields: dict[str, str] = {}
    attributes: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("attribute[") and name.endswith("]"):
            target, key = attributes, name[len("attribute[") : -1]
            attribute = _ATTRIBUTES.get(key)
            if attribute is None:
                raise Open311Error(400, f"{_shown(name)}: no such attribute on this server")
            limit = attribute.max_chars
        elif name in _POST_FIELDS:
            target, key, limit = fields, name, MAX_FIELD_CHARS
        else:
            raise Open311Error(400, f"unknown parameter {_shown(name)}")
        if key in target:
            raise Open311Error(400, f"{name}: given more than once")
        if len(value) > limit:
            raise Open311Error(400, f"{name}: longer than {limit} characters")
        if value:  # the spec: an empty parameter is an absent one
            target[key] = value
    return fields, attributes


def _number(fields: dict[str, str], name: str) -> float:
    text = fields.get(name)
    if text is None:
        raise Open311Error(400, f"{name}: required (this server files mapped cases)")
    try:
        return float(text)
    except ValueError:
        raise Open311Error(400, f"{name}: not a number: {_shown(text)}") from None


def _media_url(fields: dict[str, str]) -> str | None:
    url = fields.get("media_url")
    if url is not None and (
        len(url) > MAX_URL_CHARS or not url.startswith(("http://", "https://"))
    ):
        raise Open311Error(400, f"media_url: must be an http(s) URL of at most {MAX_URL_CHARS}")
    return url


def _case_create(
    fields: dict[str, str],
    attributes: dict[str, str],
    catalog: ClassCatalog,
    deadlines_h: dict[Any, float],
    now: datetime,
) -> CaseCreate:
    """The native case a POST files, or an Open311Error naming the parameters at fault."""
    code = fields.get("service_code")
    if code is None:
        raise Open311Error(400, "service_code: required")
    if code not in catalog:
        raise Open311Error(404, f"service_code {_shown(code)} not found")
    if "address_id" in fields:
        raise Open311Error(400, "address_id: not supported here; send lat and long")
    for key, value in attributes.items():
        values = _ATTRIBUTES[key].values
        if values is not None and value not in values:
            raise Open311Error(400, f"attribute[{key}]: one of {', '.join(values)}")
    devices = [d.strip() for d in attributes.get("device_ids", "").split(",") if d.strip()]
    if len(devices) > MAX_DEVICE_IDS:
        raise Open311Error(400, f"attribute[device_ids]: at most {MAX_DEVICE_IDS} ids")
    now_ms = int(now.timestamp() * 1000)
    evidence: list[dict[str, Any]] = [
        {"source_id": device, "ts": now_ms, "via": "open311"} for device in devices
    ]
    media_url = _media_url(fields)
    if media_url is not None:
        evidence.append({"source_id": "open311", "ts": now_ms, "media_url": media_url})
    priority = attributes.get("priority", "normal")
    deadline = attributes.get("deadline") or clock.to_iso(
        now + timedelta(hours=deadlines_h[priority])
    )
    payload = {
        "class_code": code,
        "class_name": catalog.name(code),
        "part_code": attributes.get("part_code", ""),
        "priority": priority,
        "deadline": deadline,
        "location": {
            "lat": _number(fields, "lat"),
            "lon": _number(fields, "long"),
            "address": fields.get("address_string", ""),
            "grid_code": attributes.get("grid_code", ""),
        },
        "description": fields.get("description", ""),
        "source": attributes.get("source", "manual"),
        "evidence": evidence,
        "external_key": attributes.get("external_key"),
    }
    try:
        return CaseCreate.model_validate(payload)
    except ValidationError as exc:
        raise Open311Error(400, *map(_described, exc.errors(include_url=False))) from None


def _described(error: Any) -> str:
    """A native validation error in the Open311 parameter's name."""
    loc = ".".join(str(part) for part in error["loc"])
    param = next(
        (name for field, name in _PARAM_OF.items() if loc == field or loc.startswith(field + ".")),
        loc,
    )
    return f"{param}: {str(error['msg']).removeprefix('Value error, ')}"


def _when(query: dict[str, str], name: str) -> str | None:
    """A query's time in the store's form (comparable as text), or None when absent."""
    value = query.get(name)
    if value is None:
        return None
    try:
        return clock.to_iso(clock.parse_iso(value))
    except (ValueError, OverflowError) as exc:
        raise Open311Error(400, f"{name}: {exc}") from None


def _listed(query: dict[str, str], name: str, allowed: tuple[str, ...] | None = None) -> set[str]:
    values = {v.strip() for v in query.get(name, "").split(",") if v.strip()}
    if len(values) > MAX_QUERY_IDS:
        raise Open311Error(400, f"{name}: at most {MAX_QUERY_IDS} values")
    if allowed is not None and not values <= set(allowed):
        raise Open311Error(400, f"{name}: each one of {', '.join(allowed)}")
    return values


def _listing(store: CaseStore, query: dict[str, str]) -> list[Case]:
    """The cases a ``GET requests`` asks for, at most ``MAX_LISTED``: by id (that overrides
    every other argument, as the spec says), else filtered; oldest change first with
    ``updated_after``, else newest filing first."""
    ids = _listed(query, "service_request_id")
    if ids:
        found = []
        for case_id in sorted(ids):
            try:
                found.append(store.get(case_id))
            except CaseNotFound:
                continue
        return found
    codes = _listed(query, "service_code")
    statuses = _listed(query, "status", _OPEN311_STATUSES)
    start, end = _when(query, "start_date"), _when(query, "end_date")
    updated_after = _when(query, "updated_after")
    if start and end and clock.parse_iso(end) - clock.parse_iso(start) > MAX_SPAN:
        raise Open311Error(400, f"start_date to end_date spans more than {MAX_SPAN.days} days")
    if start is None and end is None and updated_after is None:
        start = clock.to_iso(clock.now() - MAX_SPAN)

    def wanted(case: Case) -> bool:
        return (
            (not codes or case["class_code"] in codes)
            and (not statuses or _open311_status(case["status"]) in statuses)
            and (start is None or case["created_at"] >= start)
            and (end is None or case["created_at"] <= end)
        )

    only_code = next(iter(codes)) if len(codes) == 1 else None
    matches = filter(wanted, _every_case(store, only_code, updated_after))
    if updated_after is not None:
        return heapq.nsmallest(MAX_LISTED, matches, key=lambda c: (c["updated_at"], c["id"]))
    return heapq.nlargest(MAX_LISTED, matches, key=lambda c: (c["created_at"], c["id"]))


def _every_case(store: CaseStore, class_code: str | None, since: str | None) -> Iterator[Case]:
    """Every case of the class changed since ``since``, a store page at a time."""
    after: str | None = None
    while True:
        cases, after = store.find(class_code=class_code, since=since, after=after)
        yield from cases
        if after is None:
            return


def _open311_status(status: str) -> str:
    return "closed" if status in FINAL_STATUSES else "open"


def _status_notes(case: Case) -> str:
    notes = f"{case['status']} ({STATUS_NAMES[case['status']]})"
    last_note = case["history"][-1]["note"] if case["history"] else ""
    return f"{notes}: {last_note}" if last_note else notes


def _view(case: Case) -> dict[str, Any]:
    """A case as an Open311 request (with our ``attributes`` as an extension)."""
    evidence = case["evidence"]
    media = next((item["media_url"] for item in evidence if "media_url" in item), None)
    devices = [item["source_id"] for item in evidence if item.get("via") == "open311"]
    attributes = {
        "external_key": case["external_key"],
        "device_ids": ",".join(devices) or None,
        "priority": case["priority"],
        "source": case["source"],
        "deadline": case["deadline"],
        "part_code": case["part_code"] or None,
        "grid_code": case["location"]["grid_code"] or None,
    }
    return {
        "service_request_id": case["id"],
        "status": _open311_status(case["status"]),
        "status_notes": _status_notes(case),
        "service_name": case["class_name"] or None,
        "service_code": case["class_code"],
        "description": case["description"] or None,
        "agency_responsible": None,
        "service_notice": None,
        "requested_datetime": case["created_at"],
        "updated_datetime": case["updated_at"],
        "expected_datetime": clock.to_iso(clock.parse_iso(case["deadline"])),
        "address": case["location"]["address"] or None,
        "address_id": None,
        "zipcode": None,
        "lat": case["location"]["lat"],
        "long": case["location"]["lon"],
        "media_url": media,
        "attributes": {k: v for k, v in attributes.items() if v is not None},
    }
