"""The thresholds API: read the rule settings, change them live, list and roll back versions.

``thresholds_router(versions, apply, audit)`` gives the routes; the gateway mounts them on
its app, behind the guard that covers every route (changes need the operator role); each
version made goes to the audit log with every changed path's old and new value, in the
version's own transaction (503, and nothing stored or applied, if the store refuses it).
``apply(settings)`` is the gateway's way to hand a new version to its engines: it runs on
the event loop, inside the store transaction that records the version
(gateway/threshold_versions.py), so a version is stored if and only if it was applied, and
the next batch runs with it.

Errors name what is wrong: 400 a change that does not validate (the message names the
path), 404 an unknown path or version, 409 an ``expected_version`` that is no longer the
current one (someone else changed the settings since the client read them), 422 a body that
is not the documented shape. A PUT or rollback that changes nothing stores nothing and
answers 200 with ``changed: false``, so a retried request is harmless.

A version's ``author`` is who signed in, for a session or a client token
(gateway/api_author.py: a different one sent is ignored, and may be left out); the machine
token must say who acts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from gateway.api_author import recorded_author
from gateway.audit import AuditTrail
from gateway.pipeline import StoreUnavailable
from gateway.threshold_versions import (
    MAX_AUTHOR_CHARS,
    MAX_CHANGES,
    MAX_PAGE,
    MAX_PATH_CHARS,
    MAX_REASON_CHARS,
    Apply,
    Audit,
    Recorded,
    ThresholdVersion,
    ThresholdVersions,
    VersionConflict,
    VersionInputError,
    VersionNotFound,
)
from rules.settings import SettingsError, settings_get

log = logging.getLogger(__name__)

MAX_VERSION = 2**62
Path = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]
Author = Annotated[str, Field(min_length=1, max_length=MAX_AUTHOR_CHARS)]
Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)]
Version = Annotated[int, Field(ge=1, le=MAX_VERSION, strict=True)]  # true is not version 1
BODY_AUTHOR = ("body", "author")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChangeRequest(_Body):
    """``changes``: {path: value}; values as JSON (numbers, strings, null to remove a
    device's or zone's override, objects for schedules)."""

    changes: dict[Path, JsonValue] = Field(min_length=1, max_length=MAX_CHANGES)
    author: Author | None = None  # the signed-in principal's name wins (gateway/api_author.py)
    reason: Reason
    expected_version: Version | None = None


class RollbackRequest(_Body):
    version: Version
    author: Author | None = None
    reason: Reason
    expected_version: Version | None = None


def thresholds_router(
    versions: ThresholdVersions, apply: Apply, audit: AuditTrail | None = None
) -> APIRouter:
    """``audit`` None: versions are not audited (a router served alone, in tests)."""
    router = APIRouter(prefix="/api/v1/thresholds")

    def audited(http: Request, action: str, reason: str) -> Audit | None:
        """A new version's audit entry, made inside its transaction
        (gateway/threshold_versions.py)."""
        if audit is None:
            return None

        def entry(recorded: Recorded) -> None:
            diff = recorded.latest.diff
            before = {change["path"]: change["old"] for change in diff}
            after = {change["path"]: change["new"] for change in diff}
            target = f"thresholds:v{recorded.latest.version}"
            audit.entry(http, action, target, before, after, reason)

        return entry

    @router.get("")
    async def current() -> dict[str, Any]:
        """The current version and its whole settings document."""
        latest = versions.current()
        return {**_described(latest), "settings": latest.settings.model_dump(mode="json")}

    @router.get("/history")
    async def history(
        limit: int = Query(20, ge=1, le=MAX_PAGE),
        cursor: int | None = Query(None, ge=1, le=MAX_VERSION),
    ) -> dict[str, Any]:
        """Newest first, each with its diff; pass ``next_cursor`` back as ``cursor``."""
        page = versions.history(limit, cursor)
        rows = [version.summary() for version in page.versions]
        return {"versions": rows, "count": len(rows), "next_cursor": page.next_cursor}

    @router.get("/{path:path}")
    async def one(path: str) -> dict[str, Any]:
        """One param, or a group (``kinds.bin``); a device's param gives the value it runs
        with, its own override or its kind's."""
        if len(path) > MAX_PATH_CHARS:
            raise HTTPException(400, f"path: at most {MAX_PATH_CHARS} characters")
        latest = versions.current()
        try:
            value = settings_get(latest.settings, path, versions.devices)
        except SettingsError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"version": latest.version, "path": path, "value": value}

    @router.put("")
    async def change(body: ChangeRequest, http: Request) -> dict[str, Any]:
        who = recorded_author(http, body.author, BODY_AUTHOR)
        entry = audited(http, "thresholds.set", body.reason)
        return _answer(
            lambda: versions.set(
                body.changes, who, body.reason, body.expected_version, apply, entry
            )
        )

    @router.post("/rollback")
    async def rollback(body: RollbackRequest, http: Request) -> dict[str, Any]:
        who = recorded_author(http, body.author, BODY_AUTHOR)
        entry = audited(http, "thresholds.rollback", body.reason)
        return _answer(
            lambda: versions.rollback(
                body.version, who, body.reason, body.expected_version, apply, entry
            )
        )

    return router


def _described(version: ThresholdVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "created_ms": version.created_ms,
        "author": version.author,
        "reason": version.reason,
        "action": version.action,
        "rollback_to": version.rollback_to,
    }


def _answer(record: Callable[[], Recorded]) -> dict[str, Any]:
    """Run a change; its outcome as the answer, its refusal as the HTTP error that says why."""
    try:
        recorded = record()
    except (SettingsError, VersionInputError) as exc:
        raise HTTPException(400, str(exc)) from None
    except VersionNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except VersionConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except HTTPException:  # the audit entry refused (503): nothing was stored or applied
        raise
    except StoreUnavailable:  # batches before it could not be saved first: nothing changed
        raise HTTPException(503, "the store refuses writes; nothing was stored") from None
    except Exception as exc:  # apply or the store failed: the version was not stored
        log.exception("thresholds: a new version could not be applied")
        raise HTTPException(
            500, f"applying the new settings failed ({type(exc).__name__}); nothing was stored"
        ) from None
    return {**recorded.latest.summary(), "changed": recorded.changed}
