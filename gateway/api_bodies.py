"""JSON bodies read into a model with a 400 that names the field and never echoes a value.

FastAPI's own 422 repeats each wrong value back; for a body holding a password or a token
that would put the secret in the answer (and in whatever logs the answer). Routes that take
secrets, and those whose refusals should read as one line, parse through ``json_body``.
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request, model: type[M], max_bytes: int) -> M:
    raw = await request.body()
    if len(raw) > max_bytes:
        raise HTTPException(400, f"body: at most {max_bytes} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # nesting deeper than the parser goes
        raise HTTPException(400, "body: not JSON") from None
    return parsed(model, body)


def parsed(model: type[M], body: object) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise HTTPException(400, f"{where}: {first['msg']}") from None
