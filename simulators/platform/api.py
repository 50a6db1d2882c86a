"""HTTP routes of the case platform and the mapping of workflow errors to status codes.

Create and evidence read the body as a plain JSON object and validate it only after the
idempotency key has been looked up: a retry must get the stored result whatever it sends,
exactly as the first attempt's answer would have been.

``GET /cases`` answers one page: ``{"cases", "count", "next", "next_since"}``. ``next`` is
passed back as ``after`` for the following page (null on the last); ``next_since`` is what
to pass as ``since`` next time to see every change made after this listing began. It lies
``SINCE_MARGIN`` before the listing, because a write takes its timestamp before it commits:
a change stamped just before the listing but committed just after it is listed next time
rather than never. A 409 for evidence on a final case names the case's status
(``{"detail", "case_status"}``) so that a client can tell it from other conflicts; closure
check notes alone (items flagged ``closure_check``, 复核提示) are taken on a final case as
a note, its status unchanged (``CaseStore.append_evidence``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from simulators.platform import clock
from simulators.platform.guards import API_PREFIX, BodyLimit, install_guards
from simulators.platform.open311 import Open311Options, install_open311
from simulators.platform.schemas import CaseCreate, CaseFilter, EvidenceAppend, TransitionRequest
from simulators.platform.store import Case, CaseNotFound, CaseStore
from simulators.platform.webhooks import WebhookSender, WebhookTarget
from simulators.platform.workflow import CaseClosed, IllegalTransition

JsonObject = Annotated[dict[str, Any], Body()]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]
CaseId = Annotated[str, Path(max_length=64)]

SINCE_MARGIN = timedelta(seconds=5)

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


async def _case_closed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CaseClosed)
    return JSONResponse({"detail": str(exc), "case_status": exc.status}, status_code=409)


def _routes(store: CaseStore, replays: Counter[str]) -> APIRouter:
    """The workflow API; ``replays`` counts requests whose idempotency key was used
    already (answered with what the first one made), so tests can tell a client that sent
    a command twice from one that sent it once."""
    router = APIRouter(prefix=API_PREFIX)

    @router.post("/cases", status_code=201)
    def create_case(payload: JsonObject, key: IdempotencyKey = None) -> JSONResponse:
        key = key or None
        if key is not None and (existing := store.case_for_key(key)) is not None:
            replays["create"] += 1
            return JSONResponse(existing, status_code=200)
        case, created = store.create(_validate(CaseCreate, payload), key)
        replays["create"] += not created
        return JSONResponse(case, status_code=201 if created else 200)

    @router.get("/cases")
    def list_cases(query: Annotated[CaseFilter, Query()]) -> dict[str, Any]:
        next_since = clock.to_iso(clock.now() - SINCE_MARGIN)
        cases, next_after = store.find(
            query.status, query.class_code, query.since, query.after, query.limit
        )
        return {"cases": cases, "count": len(cases), "next": next_after, "next_since": next_since}

    @router.get("/cases/{case_id}")
    def get_case(case_id: CaseId) -> Case:
        return store.get(case_id)

    @router.post("/cases/{case_id}/transition")
    def transition(case_id: CaseId, body: TransitionRequest) -> Case:
        return store.transition(case_id, body.to, body.note)

    @router.post("/cases/{case_id}/evidence")
    def add_evidence(case_id: CaseId, payload: JsonObject, key: IdempotencyKey = None) -> Case:
        key = key or None
        if key is not None and (replayed := store.replayed_evidence(case_id, key)) is not None:
            replays["evidence"] += 1
            return replayed
        return store.append_evidence(case_id, _validate(EvidenceAppend, payload), key)

    return router


def create_app(
    db_path: str,
    token: str,
    unavailable_for: float = 0.0,
    open311: Open311Options | None = None,
    webhook: WebhookTarget | None = None,
) -> FastAPI:
    """Build the platform on the SQLite file ``db_path`` (created if missing), with its
    Open311 face (``simulators/platform/open311.py``) on the same store.

    ``unavailable_for`` > 0 makes every /api/v1 request fail with 503 for that many seconds
    after this call, so clients' retry and back-off paths can be tested for real.
    ``webhook``: where each status change is posted (``simulators/platform/webhooks.py``);
    the sender is ``app.state.webhooks`` and its figures are at ``GET /api/v1/webhooks``.
    """
    sender = WebhookSender(webhook) if webhook is not None else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if sender is not None:
            sender.close()

    store = CaseStore(db_path, sender.notify if sender is not None else None)
    app = FastAPI(title="citygw case platform simulator", version="1", lifespan=lifespan)
    app.state.webhooks = sender
    app.add_middleware(BodyLimit)  # added first: runs after the guards (see guards.py)
    install_guards(app, token=token, unavailable_for=unavailable_for)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CaseNotFound, _status(404))
    app.add_exception_handler(IllegalTransition, _status(409))
    app.add_exception_handler(CaseClosed, _case_closed)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    replays: Counter[str] = Counter({"create": 0, "evidence": 0})
    app.include_router(_routes(store, replays))

    @app.get(API_PREFIX + "/replays")
    def replayed() -> dict[str, int]:
        """Requests answered from an idempotency key already used, by kind."""
        return dict(replays)

    @app.get(API_PREFIX + "/webhooks")
    def webhooks() -> dict[str, Any]:
        """What the webhook sender did: ``{"enabled": false}`` without a target."""
        return {"enabled": False} if sender is None else {"enabled": True, **sender.stats()}

    install_open311(app, store, token, open311)
    return app
