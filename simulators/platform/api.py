"""HTTP routes of the case platform and the mapping of workflow errors to status codes.

Create and evidence read the body as a plain JSON object and validate it only after the
idempotency key has been looked up: a retry must get the stored result whatever it sends,
exactly as the first attempt's answer would have been.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from simulators.platform.guards import API_PREFIX, install_guards
from simulators.platform.schemas import CaseCreate, CaseFilter, EvidenceAppend, TransitionRequest
from simulators.platform.store import Case, CaseNotFound, CaseStore
from simulators.platform.workflow import CaseClosed, IllegalTransition

JsonObject = Annotated[dict[str, Any], Body()]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]

_LOCATION_KINDS = {"body", "query", "path", "header"}

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def _validate(model: type[M], payload: dict[str, Any]) -> M:
    """Validate a body read as a plain object, reporting errors as FastAPI would."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _describe(error: Any) -> dict[str, str]:
    """One pydantic error as {field, message}, e.g. class_code: must be exactly 5 digits."""
    loc = [str(part) for part in error["loc"]]
    if len(loc) > 1 and loc[0] in _LOCATION_KINDS:
        loc = loc[1:]
    if error["type"] == "json_invalid":
        return {"field": "body", "message": "invalid JSON"}
    message = str(error["msg"]).removeprefix("Value error, ")
    return {"field": ".".join(loc), "message": message}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_describe(error) for error in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _status(code: int) -> Handler:
    """A handler that turns a domain exception into ``{detail}`` with ``code``."""

    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler


def _routes(store: CaseStore) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)

    @router.post("/cases", status_code=201)
    def create_case(payload: JsonObject, key: IdempotencyKey = None) -> JSONResponse:
        key = key or None
        if key is not None and (existing := store.case_for_key(key)) is not None:
            return JSONResponse(existing, status_code=200)
        case, created = store.create(_validate(CaseCreate, payload), key)
        return JSONResponse(case, status_code=201 if created else 200)

    @router.get("/cases")
    def list_cases(query: Annotated[CaseFilter, Query()]) -> dict[str, Any]:
        cases = store.find(query.status, query.class_code, query.since)
        return {"cases": cases, "count": len(cases)}

    @router.get("/cases/{case_id}")
    def get_case(case_id: str) -> Case:
        return store.get(case_id)

    @router.post("/cases/{case_id}/transition")
    def transition(case_id: str, body: TransitionRequest) -> Case:
        return store.transition(case_id, body.to, body.note)

    @router.post("/cases/{case_id}/evidence")
    def add_evidence(case_id: str, payload: JsonObject, key: IdempotencyKey = None) -> Case:
        key = key or None
        if key is not None and (replayed := store.replayed_evidence(case_id, key)) is not None:
            return replayed
        return store.append_evidence(case_id, _validate(EvidenceAppend, payload), key)

    return router


def create_app(db_path: str, token: str, unavailable_for: float = 0.0) -> FastAPI:
    """Build the platform on the SQLite file ``db_path`` (created if missing).

    ``unavailable_for`` > 0 makes every /api/v1 request fail with 503 for that many seconds
    after this call, so clients' retry and back-off paths can be tested for real.
    """
    store = CaseStore(db_path)
    app = FastAPI(title="citygw case platform simulator", version="1")
    install_guards(app, token=token, unavailable_for=unavailable_for)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CaseNotFound, _status(404))
    app.add_exception_handler(IllegalTransition, _status(409))
    app.add_exception_handler(CaseClosed, _status(409))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(_routes(store))
    return app
