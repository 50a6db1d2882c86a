"""The shared Open311 GeoReport v2 JSON Schemas as checks, and a recorder that puts every
exchange with a server under them.

The schemas (``../shared/assets/open311_schemas``, draft 4) cover the replies; what a
client sends is checked against the swagger's ``POST requests`` parameters (typed, with the
spec's optional arguments added: the swagger lists neither ``description`` nor
``media_url``) and the spec's location rule. Error bodies have no schema in the assets;
``ERRORS`` is the spec's text as a schema. ``date-time`` and ``uri`` are checked here
(jsonschema checks them only with optional packages this project does not install).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "open311_schemas"
needs_schemas = pytest.mark.skipif(
    not SCHEMAS.is_dir(), reason=f"Open311 schemas not found at {SCHEMAS} (../shared/assets)"
)

_W3_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_W3_TIME.fullmatch(value))


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


ERRORS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["code", "description"],
        "properties": {
            "code": {"type": ["integer", "string"]},
            "description": {"type": "string"},
        },
    },
}


class Open311Schemas:
    """Validators by what they check: ``services``, ``definition``, ``requests``,
    ``filed`` (a POST's answer), ``token``, ``errors`` and ``post_form``."""

    def __init__(self) -> None:
        documents = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
        registry = Registry().with_resources(
            (name, Resource.from_contents(doc, default_specification=DRAFT4))
            for name, doc in documents.items()
        )

        def validator(schema: dict[str, Any]) -> Draft4Validator:
            return Draft4Validator(schema, registry=registry, format_checker=FORMATS)

        def array_of(definition: str) -> Draft4Validator:
            ref = f"swagger.json#/definitions/{definition}"
            return validator({"type": "array", "minItems": 1, "items": {"$ref": ref}})

        self.validators = {
            "services": validator({"$ref": "services.json"}),
            "definition": validator({"$ref": "service-definition.json"}),
            "requests": validator({"$ref": "requests.json"}),
            "filed": array_of("RequestResponse"),
            "token": array_of("TokenResponse"),
            "errors": validator(ERRORS),
            "post_form": validator(_post_form_schema(documents)),
        }

    def check(self, kind: str, value: Any) -> None:
        """Raise jsonschema's ValidationError unless ``value`` is valid as ``kind``."""
        self.validators[kind].validate(value)

    def check_form(self, pairs: list[tuple[str, str]]) -> None:
        self.check("post_form", form_document(pairs))


def _post_form_schema(documents: dict[str, Any]) -> dict[str, Any]:
    swagger = documents["swagger.json"]
    request = documents["request.json"]["properties"]
    post = swagger["paths"]["/requests.{response_format}"]["post"]
    params = [
        swagger["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
        for p in post["parameters"]
    ]
    params = [p for p in params if p["in"] == "query"]
    properties: dict[str, Any] = {
        p["name"]: {k: v for k, v in p.items() if k in ("type", "items")} for p in params
    }
    properties.update(
        api_key={"type": "string", "minLength": 1},  # securityDefinitions: api_key
        description=request["description"],
        media_url=request["media_url"],
        **{name: {"type": "string"} for name in
           ("email", "device_id", "account_id", "first_name", "last_name", "phone")},
    )  # fmt: skip
    return {
        "type": "object",
        "required": [p["name"] for p in params if p.get("required")] + ["api_key"],
        "properties": properties,
        "additionalProperties": False,
        "anyOf": [
            {"required": ["lat", "long"]},
            {"required": ["address_string"]},
            {"required": ["address_id"]},
        ],
    }


def form_document(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """A form as the swagger types it: numbers as numbers, ``attribute[code]=value`` pairs
    as the ``attribute`` list of ``code=value``; a repeated plain field is a list (invalid)."""
    document: dict[str, Any] = {}
    for name, value in pairs:
        match = re.fullmatch(r"attribute\[([^\]]+)\]", name)
        if match:
            document.setdefault("attribute", []).append(f"{match[1]}={value}")
        elif name in document:
            document[name] = [document[name], value]
        elif name in ("lat", "long"):
            document[name] = float(value)
        else:
            document[name] = value
    return document


@dataclass
class Exchange:
    """One request to the recorded app and its answer."""

    method: str
    path: str
    query: str
    body: bytes
    status: int = 0
    reply: bytes = b""

    def form(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)

    def answer(self) -> Any:
        return json.loads(self.reply)


class Recorder:
    """ASGI middleware that keeps every exchange (bodies whole), to check them after."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"], scope["query_string"].decode(), b"")
        self.exchanges.append(exchange)

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.body += message.get("body", b"")
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
            elif message["type"] == "http.response.body":
                exchange.reply += message.get("body", b"")
            await send(message)

        await self.app(scope, recording_receive, recording_send)


def kind_of(exchange: Exchange, prefix: str) -> str:
    """Which schema an exchange's answer falls under."""
    if not 200 <= exchange.status < 300:
        return "errors"
    path = exchange.path.removeprefix(prefix)
    if exchange.method == "POST":
        return "filed"
    if path == "/services.json":
        return "services"
    if path.startswith("/services/"):
        return "definition"
    if path.startswith("/tokens/"):
        return "token"
    return "requests"


def check_exchanges(
    schemas: Open311Schemas, exchanges: list[Exchange], prefix: str, *, forms: bool
) -> int:
    """Check every answer under ``prefix`` (and with ``forms`` every form sent) against the
    schemas; the number of exchanges checked."""
    exchanges = [e for e in exchanges if e.path.startswith(prefix + "/")]
    for exchange in exchanges:
        if forms and exchange.method == "POST":
            schemas.check_form(exchange.form())
        schemas.check(kind_of(exchange, prefix), exchange.answer())
    return len(exchanges)
