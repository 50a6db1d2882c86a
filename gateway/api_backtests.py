"""``/api/v1/backtests``: run a backtest from the operations console.

``POST`` takes the window, the proposed changes and the selection, checks them (400 naming
the field) and answers 202 with the job's id at once; the replay runs in a worker thread
on its own read-only SQLite connection, so the loop (which orders every write) never waits
for it. ``GET /{id}`` tells the job's status, its progress and, when done, its report.
At most ``MAX_RUNNING`` jobs run at a time (429 beyond) and the last ``MAX_KEPT`` are
kept; a window is at most 31 days, as in the CLI. Each run goes to the audit log (its
window, changes and selection; ``reason`` from the body, optional) before it starts: a run
the store would not record is not started (503).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.api_bodies import json_body
from gateway.audit import MAX_REASON_CHARS, AuditTrail
from gateway.backtest import MAX_DEVICES, MAX_WARM_UP_MS, Backtest, BacktestRequest, summary_text

MAX_RUNNING = 2
MAX_KEPT = 20
MAX_CHANGES = 100
MAX_BODY_BYTES = 2_000_000  # 20,000 device ids fit
MAX_MS = 2**53  # beyond every real time, and exact as a JSON number
ScalarValue = str | int | float | bool | None


class BacktestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since_ms: int = Field(ge=0, le=MAX_MS)
    until_ms: int = Field(ge=0, le=MAX_MS)
    changes: dict[str, ScalarValue] = Field(default_factory=dict, max_length=MAX_CHANGES)
    devices: list[str] = Field(default_factory=list, max_length=MAX_DEVICES)
    grids: list[str] = Field(default_factory=list, max_length=MAX_DEVICES)
    warm_up_s: float = Field(86_400.0, ge=0, le=MAX_WARM_UP_MS / 1000)
    reason: str = Field("", max_length=MAX_REASON_CHARS)


@dataclass(slots=True)
class _Job:
    id: str
    status: str = "queued"  # queued → running → done | failed
    progress: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    error: str | None = None

    def shown(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status, "progress": self.progress}
        if self.report is not None:
            out["report"] = self.report
            out["summary"] = summary_text(self.report)
        if self.error is not None:
            out["error"] = self.error
        return out


class BacktestJobs:
    """The jobs of one gateway process (not kept across restarts: a report is cheap to
    make again)."""

    def __init__(self, backtest: Backtest) -> None:
        self._backtest = backtest
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, request: BacktestRequest, audit: Callable[[str], object] | None = None) -> _Job:
        """Start a job; ``audit(job_id)`` first, so that a run the audit log refused never
        starts (its error is the answer)."""
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.status in ("queued", "running"))
            if running >= MAX_RUNNING:
                raise HTTPException(429, f"at most {MAX_RUNNING} backtests run at a time")
            job = _Job(uuid.uuid4().hex)
            if audit is not None:
                audit(job.id)
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_KEPT:
                oldest = next(j for j in self._jobs.values() if j.status in ("done", "failed"))
                del self._jobs[oldest.id]
        threading.Thread(target=self._run, args=(job, request), daemon=True).start()
        return job

    def get(self, job_id: str) -> _Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: _Job, request: BacktestRequest) -> None:
        job.status = "running"

        def progress(stage: str, done: int, total: int) -> None:
            job.progress = {"stage": stage, "done": done, "total": total}

        try:
            job.report = self._backtest.run(request, progress)
            job.status = "done"
        except ValueError as exc:  # a change the settings refuse, a store it cannot read
            job.error, job.status = str(exc), "failed"
        except Exception as exc:  # the job fails, never the gateway
            job.error, job.status = f"internal: {type(exc).__name__}: {exc}", "failed"


def backtests_router(backtest: Backtest, audit: AuditTrail | None = None) -> APIRouter:
    """``audit`` None: runs are not audited (a router served alone, in tests)."""
    router = APIRouter(prefix="/api/v1/backtests")
    jobs = BacktestJobs(backtest)

    @router.post("", status_code=202)
    async def start(http: Request) -> dict[str, str]:
        body = await json_body(http, BacktestBody, MAX_BODY_BYTES)
        request = _request(body)
        try:
            await asyncio.to_thread(backtest.validate, request)  # reads the store
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        ran = body.model_dump(exclude={"reason", "devices", "grids"})
        ran.update(devices=len(body.devices), grids=len(body.grids))

        def entry(job_id: str) -> None:
            if audit is not None:
                audit.write(http, "backtest.run", f"backtest:{job_id}", None, ran, body.reason)

        return {"id": jobs.start(request, entry).id}

    @router.get("/{job_id}")
    async def status(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id) if len(job_id) == 32 else None
        if job is None:
            raise HTTPException(404, "no such backtest")
        return job.shown()

    return router


def _request(parsed: BacktestBody) -> BacktestRequest:
    return BacktestRequest(
        since_ms=parsed.since_ms,
        until_ms=parsed.until_ms,
        changes=parsed.changes,
        devices=tuple(parsed.devices),
        grids=tuple(parsed.grids),
        warm_up_ms=round(parsed.warm_up_s * 1000),
    )
