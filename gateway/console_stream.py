"""The console's live alert stream: stored alert rows, fanned out to Server-Sent Events.

Alerts are committed by the pipeline on the gateway's loop; nothing tells the API when.
Rather than hook into the pipeline, one poller reads the rows committed since its last look
(``id > cursor``, the primary key: a cheap range) every ``poll_s`` while at least one client
listens, and offers each row to every subscriber. So a stream shows exactly what the store
holds, in commit order, and a client that reconnects with ``Last-Event-ID`` resumes from
the store, losing nothing it was sent before.

Bounds, as everywhere in the API:
- at most ``max_streams`` streams at once; one more is refused (counted, 503 by the route);
- each subscriber's queue holds ``queue_rows``; a client that falls that far behind is not
  waited for: its queue is closed, the rows it holds are sent, then ``event: overflow``
  ends its stream, and the browser's EventSource reconnects with its last id;
- a resume sends at most ``resume_rows`` of what was missed, preceded by ``event: gap``
  when more was missed (the client reloads its list);
- a heartbeat comment every ``heartbeat_s`` keeps proxies from closing an idle stream;
- a client gone (the server cancels its response) is unsubscribed in ``finally``; the
  poller stops when the last one leaves.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_STREAMS = 8
QUEUE_ROWS = 256
RESUME_ROWS = 200
POLL_S = 0.5
HEARTBEAT_S = 15.0
POLL_BATCH = 500  # rows read at one look; more wait for the next (bounded work per tick)

Rows = list[dict[str, Any]]
# (after_id, up_to_id or None, limit, newest_first) -> rows shown as the console shows them
ReadRows = Callable[[int, int | None, int, bool], Rows]


class TooManyStreams(RuntimeError):
    """The cap on concurrent streams is reached."""


class Subscription:
    """One client's bounded queue of ``(event, data, id)`` items."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[tuple[str, Any, int | None]] = asyncio.Queue(size)
        self.closed = False  # overflowed: what is queued is sent, then the stream ends

    def offer(self, event: str, data: Any, row_id: int | None = None) -> bool:
        if self.closed:
            return False
        try:
            self.queue.put_nowait((event, data, row_id))
        except asyncio.QueueFull:
            self.closed = True
            return False
        return True


class AlertHub:
    """Polls the alerts table while anyone listens and fans new rows out (see above)."""

    def __init__(
        self,
        read_rows: ReadRows,
        newest_id: Callable[[], int],
        max_streams: int = MAX_STREAMS,
        queue_rows: int = QUEUE_ROWS,
        resume_rows: int = RESUME_ROWS,
        poll_s: float = POLL_S,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        if resume_rows + 1 > queue_rows:
            raise ValueError("queue_rows must hold a resume and its gap marker")
        self._read_rows = read_rows
        self._newest_id = newest_id
        self.max_streams = max_streams
        self.queue_rows = queue_rows
        self.resume_rows = resume_rows
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.subscribers: set[Subscription] = set()
        self.cursor = 0
        self.counts: Counter[str] = Counter()
        self._poller: asyncio.Task[None] | None = None

    def stats(self) -> dict[str, Any]:
        return {"streams": len(self.subscribers), "cursor": self.cursor, **self.counts}

    def subscribe(self, last_id: int | None) -> Subscription:
        """A new subscriber; with ``last_id`` (the client's ``Last-Event-ID``) it first gets
        what it missed since, bounded. Runs on the loop, so no row is committed between
        the resume read and the poller's cursor: nothing is missed or sent twice."""
        if len(self.subscribers) >= self.max_streams:
            self.counts["refused"] += 1
            raise TooManyStreams(f"at most {self.max_streams} live streams at once")
        if not self.subscribers:
            self.cursor = self._newest_id()
        sub = Subscription(self.queue_rows)
        if last_id is not None and last_id < self.cursor:
            missed = self._read_rows(last_id, self.cursor, self.resume_rows + 1, True)
            if len(missed) > self.resume_rows:
                sub.offer("gap", {"after": last_id})
                missed = missed[: self.resume_rows]
            for row in reversed(missed):
                sub.offer("alert", row, row["id"])
        self.subscribers.add(sub)
        self.counts["opened"] += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll(self) -> None:
        while self.subscribers:
            await asyncio.sleep(self.poll_s)
            try:
                self.poll_once()
            except Exception:  # a store error: the streams wait, the gateway goes on
                self.counts["poll_errors"] += 1
                log.exception("console stream: reading new alerts failed")

    def poll_once(self) -> None:
        """Offer the rows committed since the last look to every subscriber."""
        rows = self._read_rows(self.cursor, None, POLL_BATCH, False)
        self.counts["polls"] += 1
        for row in rows:
            for sub in list(self.subscribers):
                if not sub.offer("alert", row, row["id"]):
                    self.counts["overflowed"] += 1
                    self.subscribers.discard(sub)
            self.cursor = row["id"]
        self.counts["rows"] += len(rows)

    async def events(self, sub: Subscription) -> AsyncIterator[str]:
        """The SSE text of one subscription until its client leaves (or falls behind)."""
        try:
            yield f"retry: {round(self.poll_s * 4000)}\n\n"
            while True:
                if sub.closed and sub.queue.empty():
                    yield "event: overflow\ndata: {}\n\n"
                    return
                try:
                    event, data, row_id = await asyncio.wait_for(sub.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                yield sse(event, data, row_id)
        finally:
            self.unsubscribe(sub)


def sse(event: str, data: Any, row_id: int | None = None) -> str:
    """One event in the text/event-stream format (JSON data has no raw newline)."""
    head = f"id: {row_id}\n" if row_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
