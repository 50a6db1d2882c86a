"""What the Open311 adapter sends: a case body as a GeoReport v2 ``POST requests`` form, and
the marker that lets the case be found again.

Open311 has no idempotency key, so a request whose answer was lost can only be recognised
by what it says. Our external key (the incident) and idempotency key (the command) travel
twice: in a configured attribute (``Open311Settings.attributes``), and in a marker line at
the end of the description, ``[citygw ref: <external key> <idempotency key>]``, which
every server keeps and lists. ``keys_of`` reads the marker back; keys are printable ASCII
without spaces or ``]`` so that a marker has exactly one reading.

The form carries the location in WGS-84 (as the spec requires; the bundled case body is
WGS-84 too), the address, the description within the spec's 4,000 characters (the marker
always fits: the text before it is shortened with an ellipsis), one ``media_url`` (the
spec has one: the body's own, else the first http(s) URL among its evidence media) and
the attributes the service defines.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from case_bridge.open311_replies import AttributeSpec

KEY = re.compile(r"[!-\\^-~]{1,128}")  # printable ASCII but space and "]"
MARKER = re.compile(r"\[citygw ref: ([!-\\^-~]{1,128}(?: [!-\\^-~]{1,128})?)\]")
MAX_MEDIA_URL_CHARS = 2000
MAX_DEVICE_IDS_CHARS = 500

# What of a case can travel as an attribute; the settings map these to the server's codes.
CaseField = Literal[
    "external_key",
    "idempotency_key",
    "class_code",
    "device_ids",
    "priority",
    "source",
    "deadline",
    "part_code",
    "grid_code",
]


class BodyError(ValueError):
    """A case body the adapter cannot send (names the field)."""


def usable_key(key: object) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise BodyError(f"key {key!r} is not 1-128 printable ASCII characters without spaces")
    return key


def marker(external_key: str, idempotency_key: str) -> str:
    keys = external_key if external_key == idempotency_key else f"{external_key} {idempotency_key}"
    return f"[citygw ref: {keys}]"


def keys_of(description: str) -> set[str]:
    """The keys in the description's markers."""
    return {key for found in MARKER.findall(description) for key in found.split(" ")}


def described(text: str, ref: str, max_chars: int) -> str:
    """``text`` and the marker on a line of its own, within ``max_chars``."""
    room = max_chars - len(ref) - 1
    if len(text) > room:
        text = text[: max(0, room - 1)] + "…"
    return f"{text}\n{ref}" if text else ref


def _coordinate(location: dict[str, Any], name: str, bound: float) -> str:
    value = location.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BodyError(f"location.{name}: not a number: {value!r}")
    if not math.isfinite(value) or abs(value) > bound:
        raise BodyError(f"location.{name}: outside ±{bound}: {value!r}")
    return f"{value:.7f}"  # about 1 cm


def _text(mapping: dict[str, Any], name: str, path: str = "") -> str:
    """``mapping[name]`` as text ("" when absent or null); ``path`` names it in errors."""
    value = mapping.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BodyError(f"{path or name}: not text: {value!r}")
    return value


def media_url(body: dict[str, Any]) -> str | None:
    """The body's ``media_url``, else the first http(s) URL among its evidence media."""
    candidates = [body.get("media_url")]
    for item in body.get("evidence") or ():
        if isinstance(item, dict) and isinstance(item.get("media"), list):
            candidates.extend(item["media"])
    return next(
        (
            url
            for url in candidates
            if isinstance(url, str)
            and url.startswith(("http://", "https://"))
            and len(url) <= MAX_MEDIA_URL_CHARS
        ),
        None,
    )


def device_ids(body: dict[str, Any]) -> str:
    """The evidence's source ids, each once, in order, as long as they fit."""
    ids: list[str] = []
    for item in body.get("evidence") or ():
        source = item.get("source_id") if isinstance(item, dict) else None
        if isinstance(source, str) and source and "," not in source and source not in ids:
            if len(",".join([*ids, source])) > MAX_DEVICE_IDS_CHARS:
                break
            ids.append(source)
    return ",".join(ids)


def field_value(
    field: CaseField, body: dict[str, Any], external_key: str, idempotency_key: str
) -> str:
    """The text an attribute carries for ``field`` ("" when the case has none)."""
    if field == "external_key":
        return external_key
    if field == "idempotency_key":
        return idempotency_key
    if field == "device_ids":
        return device_ids(body)
    if field == "grid_code":
        location = body.get("location")
        return (
            _text(location, "grid_code", "location.grid_code") if isinstance(location, dict) else ""
        )
    return _text(body, field)


def request_form(
    body: dict[str, Any],
    idempotency_key: str,
    *,
    service_code: str,
    api_key: str,
    jurisdiction_id: str | None,
    attributes: dict[CaseField, str],
    defined: dict[str, AttributeSpec],
    description_chars: int,
) -> list[tuple[str, str]]:
    """The ``POST requests`` form for a case body, in order. ``attributes`` maps our fields
    to the server's attribute codes; only those ``defined`` for the service (and meant for
    input) are sent. Raises BodyError naming the field the body lacks."""
    external_key = usable_key(body.get("external_key") or idempotency_key)
    usable_key(idempotency_key)
    location = body.get("location")
    if not isinstance(location, dict):
        raise BodyError(f"location: not an object: {location!r}")
    form = [("api_key", api_key)]
    if jurisdiction_id is not None:
        form.append(("jurisdiction_id", jurisdiction_id))
    form += [
        ("service_code", service_code),
        ("lat", _coordinate(location, "lat", 90)),
        ("long", _coordinate(location, "lon", 180)),
    ]
    if address := _text(location, "address", "location.address"):
        form.append(("address_string", address))
    ref = marker(external_key, idempotency_key)
    form.append(("description", described(_text(body, "description"), ref, description_chars)))
    if url := media_url(body):
        form.append(("media_url", url))
    for field, code in attributes.items():
        spec = defined.get(code)
        value = field_value(field, body, external_key, idempotency_key)
        if spec is not None and spec.variable and value:
            form.append((f"attribute[{code}]", value))
    return form
