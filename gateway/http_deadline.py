"""uvicorn's HTTP/1.1 protocol with a deadline for every request head.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but waits
forever for a connection that never finishes its first request head: anyone who can reach
the port, token or not, could hold connections open that way until the server's connection
cap answers 503 to everyone, ``/healthz`` included. Here each connection must deliver a
complete request head within ``HEAD_TIMEOUT_S`` of opening (and of its previous response);
the timer is armed once per head, not re-armed by each trickled byte, so a slow sender
gains nothing.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0


class DeadlineH11Protocol(H11Protocol):
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(HEAD_TIMEOUT_S, self._head_overdue)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_overdue(self) -> None:
        """No request head since the timer was armed (a request in progress is left to
        finish): close the connection."""
        self._head_deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
