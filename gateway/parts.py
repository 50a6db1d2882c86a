"""Runtime parts: what the gateway runs beside its loop, behind one small protocol.

Every part (MQTT ingest, serial ports, cameras, case delivery, status sync, upkeep, the
API server, ...) has a name, starts, stops and reports its figures. The gateway holds a
list of them, starts them in order, stops them in reverse, and builds ``/api/v1/stats`` and
``/metrics`` from their ``stats()``; adding a part touches the list, not the gateway's
start/stop sequence or its stats code.

A part that runs a loop on the event loop is supervised: an unforeseen exception is
logged, counted and the loop restarted after a backoff, so one bad reply or row costs a
retry, never the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from domain.retry import Backoff

log = logging.getLogger(__name__)

Stats = Callable[[], dict[str, Any]]


def _no_stats() -> dict[str, Any]:
    return {}


class RuntimePart(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class LoopPart:
    """A coroutine that runs until cancelled (delivery, status sync, upkeep, consume),
    restarted after a backoff when it raises."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        stats: Stats = _no_stats,
        request_exit: Callable[[], None] | None = None,
    ) -> None:
        """``request_exit`` asks the loop to finish by itself (an HTTP server closing its
        connections) before it is cancelled."""
        self.name = name
        self._run = run
        self._stats = stats
        self._request_exit = request_exit
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.last_error = ""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if self._request_exit is not None:
            self._request_exit()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def stats(self) -> dict[str, Any]:
        return self._stats()

    def supervision(self) -> dict[str, Any]:
        """How often the loop failed and was restarted, and why the last time."""
        return {"restarts": self.restarts, "last_error": self.last_error}

    async def _supervise(self) -> None:
        backoff = Backoff(initial_s=1.0, max_s=60.0)
        while True:
            try:
                await self._run()
                return  # finished by itself (e.g. the API server asked to exit)
            except Exception as exc:
                self.restarts += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = backoff.next_delay()
                log.exception("%s failed (%d so far); restarting in %.1f s",
                              self.name, self.restarts, delay)  # fmt: skip
                await asyncio.sleep(delay)


class ThreadedPart:
    """A component that runs on threads of its own (paho's network thread, serial ports,
    cameras): started on the loop, stopped off it, since stopping joins threads."""

    def __init__(
        self,
        name: str,
        start: Callable[[], None],
        stop: Callable[[], None],
        stats: Stats = _no_stats,
    ) -> None:
        self.name = name
        self._start = start
        self._stop = stop
        self._stats = stats

    async def start(self) -> None:
        self._start()

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def stats(self) -> dict[str, Any]:
        return self._stats()


async def start_all(parts: list[RuntimePart]) -> None:
    for part in parts:
        await part.start()


async def stop_all(parts: list[RuntimePart]) -> None:
    """Stop in reverse order; one part failing to stop does not keep the others running."""
    for part in reversed(parts):
        try:
            await part.stop()
        except Exception:
            log.exception("stopping %s failed", part.name)
