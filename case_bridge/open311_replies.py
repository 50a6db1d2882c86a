"""What an Open311 GeoReport v2 server's replies mean: read leniently, never guessed.

Real servers deviate from the spec, so the readers accept whatever has one reading:

- any 2xx is success (servers answer a POST with 200, 201 or 202 alike);
- a list where the spec has one, the object itself where a list of one is meant, or the
  object wrapped as the spec's XML→JSON conversion wraps it (``{"service_requests":
  [...]}``, ``{"service_requests": {"request": [...]}}``);
- an empty string where null is meant is null;
- an id or code sent as a JSON integer (the spec's own examples do) is its decimal text;
- booleans as ``true``/``"true"``, statuses in any letter case.

The rest is refused with a reason: a 2xx that cannot be read is ``DOUBTFUL`` (the server may
have acted on it); a non-2xx fails with the kind ``platform.error_for`` gives its status
(501 Not Implemented is refused: asking again cannot help), and the reason carries the
server's own error codes and descriptions, from Open311's ``[{"code", "description"}]`` or
the other shapes servers use (one object, ``{"errors": [...]}``, ``{"error"}``,
``{"detail"}``, ``{"message"}``, plain text). Listed items that cannot be used are
skipped and counted, never guessed at. What is read is bounded: item counts, the
lengths of ids, codes, times and descriptions.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from case_bridge.platform import (
    DETAIL_CHARS,
    MAX_PAGE_CASES,
    Failure,
    PlatformError,
    error_for,
    parse_zoned,
    shown,
    usable_case_id,
)

# Service codes travel in URL paths (``services/{code}.json``) and form fields.
SERVICE_CODE = re.compile(r"[^\s/\\?#%]{1,64}")
MAX_SERVICES = 1000
MAX_ATTRIBUTES = 200
MAX_REQUEST_ATTRIBUTES = 100
MAX_DESCRIPTION_CHARS = 16000  # the spec's limit is 4,000; longer ones are not read
MAX_TIME_CHARS = 64
MAX_ERRORS_SHOWN = 5
SERVICE_TYPES = frozenset({"realtime", "batch", "blackbox"})
OPEN311_STATUSES = frozenset({"open", "closed"})
# The keys the XML→JSON conversion wraps lists in, outer and inner.
_WRAPPERS = ("service_requests", "services", "service_definition", "requests")
_INNER = ("request", "service", "attribute", "error")


class Unreadable(ValueError):
    """A value that is present but has no single reading."""


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of ``services.json``."""

    code: str
    name: str
    metadata: bool
    type: str  # realtime, batch or blackbox


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute of a service definition (``variable`` false: shown, never sent)."""

    code: str
    required: bool
    variable: bool


@dataclass(frozen=True, slots=True)
class Filed:
    """The answer to ``POST requests``: an id (realtime) or a token to resolve (batch)."""

    service_request_id: str | None
    token: str | None
    notice: str | None


@dataclass(frozen=True, slots=True)
class ServiceRequest:
    """One listed request. ``status`` is ``open``, ``closed`` or None for one the spec does
    not know (e.g. ``in_progress``); ``changed`` is ``updated_datetime``, else
    ``requested_datetime`` (None when neither is a zoned ISO time)."""

    id: str
    status: str | None
    changed: str | None
    requested: str | None
    description: str
    attributes: dict[str, str] = field(default_factory=dict)
    service_code: str | None = None
    lat: float | None = None  # WGS-84 degrees, None unless both are usable
    lon: float | None = None


def _json(status: int, body: bytes, what: str) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PlatformError(
            f"HTTP {status} on {what} is not JSON (only the .json format is read): {shown(body)}",
            Failure.DOUBTFUL,
        ) from None


def _text(value: object) -> str | None:
    """A scalar as text: None and "" are absent, an integer is its decimal text."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Unreadable(f"not text: {shown(value)}")


def _ident(value: object) -> str | None:
    """An id we can keep and put in a URL path, None when absent."""
    text = _text(value)
    if text is not None and usable_case_id(text) is None:
        raise Unreadable(f"unusable id {shown(text)}")
    return text


def _flag(value: object, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Unreadable(f"not true or false: {shown(value)}")


def _time(value: object) -> str | None:
    """The time as sent when it is a zoned ISO time of sane length, else None."""
    try:
        text = _text(value)
        if text is None:
            return None
        parse_zoned(text)
    except (Unreadable, ValueError):
        return None
    return text


def _items(value: Any, item_keys: tuple[str, ...], limit: int, status: int, what: str) -> list[Any]:
    """The list of items a reply holds, in any of the shapes with one reading; an item is
    an object with one of ``item_keys``."""
    for _ in range(2):  # at most an outer and an inner wrapper
        if isinstance(value, dict) and len(value) == 1 and not value.keys() & set(item_keys):
            ((key, inner),) = value.items()
            if key in _WRAPPERS or key in _INNER:
                value = inner
                continue
        break
    if isinstance(value, dict) and (value.keys() & set(item_keys) or not value):
        value = [value] if value else []
    if not isinstance(value, list):
        raise PlatformError(
            f"HTTP {status} on {what}: neither a list nor one item with {item_keys[0]}:"
            f" {shown(value)}",
            Failure.DOUBTFUL,
        )
    if len(value) > limit:
        raise PlatformError(f"HTTP {status} on {what}: more than {limit} items", Failure.DOUBTFUL)
    return value


def services_reply(status: int, body: bytes, what: str) -> tuple[dict[str, Service], int]:
    """The services offered, by code, and how many listed entries were unusable."""
    items = _items(_json(status, body, what), ("service_code",), MAX_SERVICES, status, what)
    services: dict[str, Service] = {}
    for item in items:
        try:
            service = _service(item)
        except Unreadable:
            continue
        services.setdefault(service.code, service)
    return services, len(items) - len(services)


def _service(item: object) -> Service:
    if not isinstance(item, dict):
        raise Unreadable("not an object")
    code = _text(item.get("service_code"))
    if code is None or not SERVICE_CODE.fullmatch(code):
        raise Unreadable(f"unusable service_code {shown(code)}")
    kind = (_text(item.get("type")) or "realtime").strip().lower()
    if kind not in SERVICE_TYPES:
        raise Unreadable(f"unknown type {shown(kind)}")
    name = _text(item.get("service_name")) or code
    return Service(code, name[:200], _flag(item.get("metadata"), False), kind)


def definition_reply(status: int, body: bytes, what: str, code: str) -> dict[str, AttributeSpec]:
    """The attributes of service ``code`` by attribute code; DOUBTFUL when the reply is
    another service's, or an attribute cannot be read (a required one may hide in it)."""
    items = _items(_json(status, body, what), ("service_code", "attributes"), 1, status, what)
    definition = items[0] if items else {}
    if not isinstance(definition, dict):
        raise PlatformError(f"HTTP {status} on {what}: not an object", Failure.DOUBTFUL)
    try:
        answered = _text(definition.get("service_code"))
        if answered is not None and answered != code:
            raise Unreadable(f"the definition of service_code {shown(answered)}")
        listed = _items(definition.get("attributes") or [], ("code",), MAX_ATTRIBUTES, status, what)
        attributes = [_attribute(item) for item in listed]
    except Unreadable as exc:
        raise PlatformError(f"HTTP {status} on {what}: {exc}", Failure.DOUBTFUL) from None
    return {attribute.code: attribute for attribute in attributes}


def _attribute(item: object) -> AttributeSpec:
    if not isinstance(item, dict):
        raise Unreadable(f"an attribute that is not an object: {shown(item)}")
    code = _text(item.get("code"))
    if code is None or len(code) > 64:
        raise Unreadable(f"an attribute with an unusable code {shown(code)}")
    return AttributeSpec(
        code, _flag(item.get("required"), False), _flag(item.get("variable"), True)
    )


def filed_reply(status: int, body: bytes, what: str) -> Filed:
    """The one request a POST filed: its id, or the token that will give it."""
    items = _items(_json(status, body, what), ("service_request_id", "token"), 1, status, what)
    if not items or not isinstance(items[0], dict):
        raise PlatformError(
            f"HTTP {status} on {what}: no request in the answer: {shown(body)}",
            Failure.DOUBTFUL,
        )
    item = items[0]
    try:
        request_id, token = _ident(item.get("service_request_id")), _ident(item.get("token"))
        notice = _text(item.get("service_notice"))
    except Unreadable as exc:
        raise PlatformError(f"HTTP {status} on {what}: {exc}", Failure.DOUBTFUL) from None
    if request_id is None and token is None:
        raise PlatformError(
            f"HTTP {status} on {what}: neither service_request_id nor token: {shown(item)}",
            Failure.DOUBTFUL,
        )
    return Filed(request_id, None if request_id else token, notice[:300] if notice else None)


def token_reply(status: int, body: bytes, what: str) -> str | None:
    """The id a token stands for, None while the server has not assigned one."""
    items = _items(_json(status, body, what), ("token", "service_request_id"), 1, status, what)
    if not items:
        return None
    if not isinstance(items[0], dict):
        raise PlatformError(f"HTTP {status} on {what}: not an object", Failure.DOUBTFUL)
    try:
        return _ident(items[0].get("service_request_id"))
    except Unreadable as exc:
        raise PlatformError(f"HTTP {status} on {what}: {exc}", Failure.DOUBTFUL) from None


def requests_reply(status: int, body: bytes, what: str) -> tuple[list[ServiceRequest], int]:
    """The listed requests we can use, and how many listed items were unusable."""
    items = _items(_json(status, body, what), ("service_request_id",), MAX_PAGE_CASES, status, what)
    requests = []
    for item in items:
        try:
            requests.append(_request(item))
        except Unreadable:
            continue
    return requests, len(items) - len(requests)


def _request(item: object) -> ServiceRequest:
    if not isinstance(item, dict):
        raise Unreadable("not an object")
    request_id = _ident(item.get("service_request_id"))
    if request_id is None:
        raise Unreadable("no service_request_id")
    try:
        status = (_text(item.get("status")) or "").strip().lower()
    except Unreadable:
        status = ""
    requested = _time(item.get("requested_datetime"))
    description = item.get("description")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        description = ""
    try:
        service_code = _text(item.get("service_code"))
    except Unreadable:
        service_code = None
    lat, lon = _degrees(item.get("lat"), 90), _degrees(item.get("long"), 180)
    return ServiceRequest(
        request_id,
        status if status in OPEN311_STATUSES else None,
        _time(item.get("updated_datetime")) or requested,
        requested,
        description,
        _request_attributes(item.get("attributes")),
        service_code if service_code and SERVICE_CODE.fullmatch(service_code) else None,
        lat if lon is not None else None,
        lon if lat is not None else None,
    )


def _degrees(value: object, bound: float) -> float | None:
    """A latitude or longitude sent as a number or as decimal text (the spec's examples
    do both), within ±``bound``; None for anything else."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TIME_CHARS:
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and abs(value) <= bound else None


def _request_attributes(value: object) -> dict[str, str]:
    """A listed request's attributes (an extension of some servers, ours included), as
    ``{code: value}`` or ``[{"code", "value"}]``; unreadable entries are left out."""
    if isinstance(value, list):
        pairs = [(i.get("code"), i.get("value")) for i in value if isinstance(i, dict)]
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        return {}
    attributes: dict[str, str] = {}
    for code, raw in pairs[:MAX_REQUEST_ATTRIBUTES]:
        try:
            text = _text(raw)
        except Unreadable:
            continue
        if isinstance(code, str) and text is not None and len(text) <= MAX_DESCRIPTION_CHARS:
            attributes[code] = text
    return attributes


def error_details(body: bytes) -> tuple[list[str], bool]:
    """The server's errors as ``"code: description"`` texts, and whether the body had
    Open311's own shape (a list of, or one, ``{"code", "description"}``)."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        text = " ".join(body[:DETAIL_CHARS].decode("utf-8", errors="replace").split())
        return ([text] if text else []), False
    if isinstance(value, dict) and isinstance(value.get("errors"), list | dict):
        value = value["errors"]
    entries = value if isinstance(value, list) else [value]
    shaped = bool(entries) and all(
        isinstance(e, dict) and "code" in e and "description" in e for e in entries
    )
    details = []
    for entry in entries[:MAX_ERRORS_SHOWN]:
        if isinstance(entry, dict):
            code = entry.get("code")
            words = next(
                (entry[k] for k in ("description", "error", "detail", "message") if k in entry),
                "",
            )
            text = words if isinstance(words, str) else json.dumps(words, ensure_ascii=False)
            details.append(f"{code}: {text}" if code not in (None, "") else text)
        elif isinstance(entry, str):
            details.append(entry)
    return [d[:DETAIL_CHARS] for d in details if d], shaped


def error_reply(
    status: int, body: bytes, what: str, retry_after: str | None, *, may_have_acted: bool = False
) -> PlatformError:
    """The failure a non-2xx answer means, with the server's errors in the reason.
    ``may_have_acted``: the server had already acted before this answer (a token's
    request was filed), whatever the answer says."""
    kind = error_for(status, body, what, retry_after, evidence=False)
    details, _ = error_details(body)
    reason = f"HTTP {status} on {what}: {'; '.join(details)}"[: DETAIL_CHARS * 2]
    failure = Failure.REFUSED if status == 501 else kind.failure
    return PlatformError(
        reason,
        failure,
        retry_after_s=kind.retry_after_s,
        may_have_acted=may_have_acted or (kind.may_have_acted and failure is kind.failure),
    )
