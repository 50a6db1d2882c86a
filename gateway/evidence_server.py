"""A replica's public listener for signed evidence links ``/evidence/<name>?exp=&sig=``
(gateway/api_evidence.py), apart from its status server (gateway/replica_status.py).

Replicas serve no API, yet a case's ``media_url`` must reach its picture wherever the
camera ran. With the replicas sharing one evidence folder and so one link secret
(``evidence.dir``), every replica serves every link, the camera's replica dead or not;
``evidence.public_url`` names this listener as platforms reach it (any replica, or a
balancer over them).

Its own listener, because what platforms reach must not decide a replica's health: on the
status server, readers slow to take a picture of megabytes held its connection slots (and
the picture in memory) until ``/healthz`` answered 503 for good, and binding it beyond
loopback for platforms exposed ``/stats`` with it. Here the connections have a cap of
their own, each must send its request head within ``HEAD_TIMEOUT_S``
(gateway/http_deadline.py) and take its whole response within ``response_deadline_s`` of
it; past that the connection is dropped and its buffered bytes with it. Links are checked
before any file is looked up; nothing here writes; only GETs on ``/evidence/`` answer.
"""

from __future__ import annotations

import asyncio

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from gateway.api_evidence import evidence_router
from gateway.evidence import EvidenceWriter
from gateway.http_deadline import DeadlineH11Protocol


class EvidenceServerSettings(BaseModel):
    """``cluster.evidence_server``: where a replica serves evidence links (off unless set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Loopback by default; a host platforms reach (0.0.0.0 in a container) to serve them.
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    # Connections at once; past it a request gets 503 (each may hold a picture in memory).
    max_connections: int = Field(32, ge=1, le=1024)
    # A response not taken whole within this time of its request is cut off.
    response_deadline_s: float = Field(60.0, ge=1.0, le=3600.0)


class ResponseDeadlineH11Protocol(DeadlineH11Protocol):
    """The head deadline, and a deadline per response: armed when a request head arrives,
    met once the response is complete and its last byte has left the server's buffer. To
    uvicorn a response is complete once handed to the transport, which then holds a picture
    of megabytes for a reader that never takes it, as long as the reader likes."""

    response_deadline_s = 60.0
    _response_deadline: asyncio.TimerHandle | None = None
    _timed: object = None  # the request cycle the deadline is for

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if cycle is not None and cycle is not self._timed and not cycle.response_complete:
            self._cancel_response_deadline()
            self._timed = cycle
            self._response_deadline = self.loop.call_later(
                self.response_deadline_s, self._response_overdue
            )

    def on_response_complete(self) -> None:
        if self.transport.get_write_buffer_size() == 0:
            self._cancel_response_deadline()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_response_deadline()
        super().connection_lost(exc)

    def _cancel_response_deadline(self) -> None:
        if self._response_deadline is not None:
            self._response_deadline.cancel()
            self._response_deadline = None

    def _response_overdue(self) -> None:
        """Abort, not close: a close would still wait to hand the reader every byte."""
        self._response_deadline = None
        cycle = self.cycle
        delivered = cycle is not None and cycle.response_complete
        if not (delivered and self.transport.get_write_buffer_size() == 0):
            self.transport.abort()


def evidence_app(evidence: EvidenceWriter) -> FastAPI:
    """The signed links of ``evidence``'s folder, and nothing else."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(evidence_router(evidence.folder, evidence.links))
    return app


def evidence_server(settings: EvidenceServerSettings, evidence: EvidenceWriter) -> uvicorn.Server:
    protocol = type(
        "EvidenceH11Protocol",
        (ResponseDeadlineH11Protocol,),
        {"response_deadline_s": settings.response_deadline_s},
    )
    return uvicorn.Server(
        uvicorn.Config(
            evidence_app(evidence), host=settings.host, port=settings.port, log_level="warning",
            log_config=None, lifespan="off", server_header=False, timeout_keep_alive=5,
            limit_concurrency=settings.max_connections, http=protocol,
        )
    )  # fmt: skip
