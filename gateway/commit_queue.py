"""The pipeline's store commits, in the order their batches were made, the ingest's on a
thread of their own.

Why a thread: a batch's COMMIT waits for the disk (the WAL's fsync), and while the event
loop waited for it nothing else ran there — not the next batch's decoding, not case
delivery, not the API. Measured live at half the gateway's maximum rate, the loop was 97 %
busy and 63 % of that was the commit. SQLite (and psycopg) release the GIL while they
work, so a commit on a thread overlaps the next batch's preparation on the loop.

What keeps it correct:
- One commit at a time, in the order the batches were made (``queue``): a batch holds the
  rule state as it stood after it, so committing an older batch after a newer one would
  put older state back. Batches queued while one commits are merged, in order, and go
  next, as one commit: a disk slow to sync makes commits larger rather than the backlog
  longer (group commit).
- A batch's state rows are encoded when it is queued (``store.Batch.seal``), on the loop
  that owns the live state: the thread never reads state the loop is changing.
- Every other write of the pipeline (``save``: device health, camera alerts, the API's)
  waits for the commit in flight, commits everything queued before it and then itself,
  on the caller's thread; so nothing commits out of turn, and such a caller still learns
  at once whether the store took its write.
- A batch is acknowledged upstream only once ``saved_upto`` covers its ticket; a commit
  the store refuses keeps its batch (and everything queued after it) for ``save`` to try
  again, and ``failed`` says so until one succeeds.
- An error that is not the store's (a bug in a write) drops the batches of that commit
  alone, logged and counted (``commit_errors``), as a synchronous commit always did: kept,
  they would fail every retry and stop all ingest. Their tickets are ``dropped``, never
  acknowledged: the broker sends their messages again after a reconnect.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from gateway import store

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The store refused a commit. The batch is kept and retried by ``flush`` (or with the
    next batch); until then nothing it holds may be acknowledged upstream."""


class CommitQueue:
    """Batches waiting for the store, the one committing and what is saved, by ticket."""

    def __init__(
        self,
        commit: Callable[[store.Batch], None],
        counters: Counter[str],
        background: bool = False,
    ) -> None:
        """``commit`` writes one batch in one transaction (``store.commit`` on the pipeline's
        connection). With ``background``, ``start`` runs it on a thread of its own; that
        connection must then be used by nothing else while a commit is in flight."""
        self._commit = commit
        self._counters = counters
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="store-commit") if background else None
        )
        self._queued: store.Batch | None = None
        self.queued_batches = 0  # merged into ``_queued``
        self._made = 0  # tickets handed out by ``queue``
        # Every batch with a ticket up to this one is settled: committed, or ``dropped``.
        self.saved_upto = 0
        self._dropped: list[tuple[int, int]] = []  # ticket ranges dropped, oldest first
        self._flight: Future[None] | None = None
        self._flight_batch = store.Batch()
        self._flight_upto = 0
        self.failed = False

    @property
    def in_flight(self) -> Future[None] | None:
        """The background commit under way, if any (await it with ``asyncio.wrap_future``,
        then call ``settle``)."""
        return self._flight

    @property
    def last_ticket(self) -> int:
        """The ticket of the batch queued last."""
        return self._made

    def queue(self, batch: store.Batch) -> int:
        """Put ``batch`` behind every batch queued or committing; return its ticket."""
        batch.seal()
        if self._queued is None:
            self._queued = batch
        else:
            self._queued.extend(batch)
        self.queued_batches += 1
        self._made += 1
        return self._made

    def start(self) -> bool:
        """Hand what is queued to the commit thread, unless a commit is in flight or a
        refused one waits for ``save``. Returns whether a commit started."""
        assert self._thread is not None, "start needs a queue made with background=True"
        if self._flight is not None or self._queued is None or self.failed:
            return False
        self._flight_batch, self._flight_upto = self._queued, self._made
        self._queued, self.queued_batches = None, 0
        self._flight = self._thread.submit(self._commit, self._flight_batch)
        return True

    def settle(self) -> None:
        """Wait for the commit in flight (blocking) and take its outcome: saved, or kept at
        the head of the queue with everything queued since. Raises nothing: ``failed``
        tells the caller what happened."""
        flight, self._flight = self._flight, None
        if flight is None:
            return
        try:
            flight.result()
        except store.DatabaseError as exc:
            self._refused(self._flight_batch, exc)
            return
        except Exception as exc:
            self._drop(self._flight_upto, exc)
            return
        self.saved_upto = self._flight_upto

    def save(self, batch: store.Batch | None = None) -> None:
        """Commit everything queued, then ``batch``, on the calling thread once the commit
        in flight is done. Raises ``StoreUnavailable`` when the store refuses; the writes
        stay queued for the next try. Any other error drops the writes of that commit
        alone: the queued batches' (``dropped``), or ``batch``'s, which then reaches the
        caller as it is."""
        self.settle()
        if self._queued is not None:
            queued, upto = self._queued, self._made
            self._queued, self.queued_batches = None, 0
            try:
                self._commit(queued)
            except store.DatabaseError as exc:
                self._refused(queued, exc)
                if batch is not None:
                    self.queue(batch)
                raise StoreUnavailable(_described(exc)) from exc
            except Exception as exc:
                self._drop(upto, exc)
            else:
                self.saved_upto, self.failed = upto, False
        if batch is None:
            return
        batch.seal()
        self._made += 1
        try:
            self._commit(batch)
        except store.DatabaseError as exc:
            self._refused(batch, exc)
            raise StoreUnavailable(_described(exc)) from exc
        self.saved_upto, self.failed = self._made, False

    def dropped(self, ticket: int) -> bool:
        """Whether the batch of ``ticket`` (settled: at most ``saved_upto``) was dropped.
        Asked in ticket order, as acknowledgements go: ranges behind it are forgotten."""
        while self._dropped and self._dropped[0][1] < ticket:
            self._dropped.pop(0)
        return bool(self._dropped) and self._dropped[0][0] <= ticket

    def unsaved(self) -> list[store.Batch]:
        """The batches not committed yet, oldest first: the one committing, then those
        queued (read on the loop; the commit thread only reads a batch)."""
        flight = [self._flight_batch] if self._flight is not None else []
        return flight + ([self._queued] if self._queued is not None else [])

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing committing: every write made so far is in the store."""
        return self._flight is None and self._queued is None

    def close(self) -> None:
        """Wait for the commit in flight, then stop the thread. What is still queued is not
        committed: its messages were never acknowledged, so the broker sends them again."""
        self.settle()
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    def _drop(self, upto: int, exc: BaseException) -> None:
        """The commit of the batches up to ticket ``upto`` failed with a bug: forget them."""
        self._dropped.append((self.saved_upto + 1, upto))
        self.saved_upto, self.failed = upto, False
        self._counters["commit_errors"] += 1
        log.error("a commit failed, not by the store's doing; its batches dropped", exc_info=exc)

    def _refused(self, batch: store.Batch, exc: BaseException) -> None:
        if self._queued is not None:
            batch.extend(self._queued)
        self._queued, self.failed = batch, True
        self.queued_batches += 1
        self._counters["commit_failures"] += 1
        log.error("store commit failed, kept for retry: %s", _described(exc))


def _described(exc: BaseException) -> str:
    """A store error as the log may carry it: PostgreSQL's SQLSTATE and the error's class,
    as its text can quote a refused value from a device's payload; SQLite's own text,
    which names the condition ("database or disk is full") and never a value."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is not None:
        return f"{type(exc).__name__} (SQLSTATE {sqlstate})"
    return str(exc)
