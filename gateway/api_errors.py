"""The API's answer to a body that does not parse into its model: a 422 that can always be
written.

FastAPI's own 422 echoes each wrong value back (``input``). Python's JSON reader accepts
``NaN`` and ``Infinity``, which a JSON answer may not hold: so a body such as
``{"starts_ms": Infinity}`` made the 422 itself fail to render, the client got a 500 and
its connection was dropped. Here a value JSON cannot hold is echoed as its text instead.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def install_validation_errors(app: FastAPI) -> None:
    """Answer every request validation error with a 422 JSON can carry."""
    app.add_exception_handler(RequestValidationError, validation_error)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = _json_safe(jsonable_encoder(exc.errors()))
    return JSONResponse(status_code=422, content={"detail": detail})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value
