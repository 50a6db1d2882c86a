"""A delivery the store refuses for its content: find the poison messages by halves, so
that one message PostgreSQL will not take never stops a partition (gateway/replica.py).

The codecs bound everything a device sends to what the store's columns hold (strict UTF-8
JSON, ``ts`` and ``seq`` within 64 bits, each value finite and within its field's range,
registered device ids of at most 64 characters, NUL written as ``\\x00``), so no payload
known today reaches such a refusal. This is the net under those bounds: a codec, a column
or a constraint changed later must cost the messages it concerns, not a slice of the
city's devices, whose batch would otherwise come again for ever.

The refusals judged to be the content's (``content_refusal``): SQLSTATE class 22, data
exceptions (a value out of a column's range or bound, text PostgreSQL will not store), and
the driver's own refusals before sending (text holding NUL, a ``DataError`` without
SQLSTATE; a lone surrogate, which a JSON ``\\udc00`` escape makes and UTF-8 cannot encode).
Class 23, integrity constraints, is not: a unique violation on a key the store draws
itself (``alert_log``'s id sequence left behind by a restore) or a constraint added to a
table is the store's or the schema's fault, and blaming it on the message would lose the
reading and its alert for good. It, and everything else (a lost session, a serialization
failure, a lock or statement timeout, an administrator's shutdown, a stale lease), leaves
the delivery unacked to come again, as before.

A refused delivery is committed in halves, in stream order, each through the worker as
the store holds it (a commit that failed leaves the worker ahead of the store, so after
the rollback it is rebuilt from the store on the same session before the next try): a
half that commits is done, a half refused is halved again, and a single message refused
is a ``store_refused`` dead letter with its SQLSTATE, committed with the worker's own
writes (re-arms, states, the record of what committed). Rule and replay state therefore
see the good messages in their order and the poison ones never, and since every commit
records the messages it took (gateway/replica_committed.py), a delivery that comes again
mid-way applies nothing twice and counts no poison twice. What each step commits is
counted at once, so a delivery ended later still counts it.

Cost: one poisoned message in a delivery of n costs about 2·log2(n) commits and as many
worker rebuilds (each reads the partition devices' state back), and p of them up to about
2·p·log2(n/p) (256 messages, 128 of them poison: 1.2 s on a 2-core machine); no new
session, but all of it on the replica's event loop, which also renews the leases. So a
delivery gets ``lease_ttl_s / 3`` (its ``budget_s``): once that is spent, and the delivery
has taken a step (a half committed or a message dead-lettered), the search raises
``ComeAgain``; the delivery is not acked, comes again, and goes on from what the record
says committed. A step is awaited whatever the budget, so every delivery advances even on
a slow store.

What the content cannot be blamed for: a store that refuses the worker's own writes fails
the dead letter's commit too, so nothing is dead-lettered and the delivery comes again;
a store that refuses every reading (a column or a trigger gone wrong) would make every
message look poisoned, so after ``MAX_REFUSED_IN_A_ROW`` dead letters from different
devices with no message taken between (counted in the store, across deliveries and
replicas) the search stops (``StoreRefusesAll``) and the partition waits, as it did before,
for the store to be mended; the replica shows it in its /stats (gateway/replica.py). The
run counts only across devices (its dead letters beyond its most refused device's): one
device's poison, however many messages in a row, is that device's content, and never
stops the others' readings behind it. A store refusing everything from a partition with a
single device sending is therefore not told from that device's poison, and where one device
sends most of a partition's traffic, its messages are dead-lettered (a few commits each)
until 8 of the others' have been.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from devices.nats_ingest import IngestMessage
from gateway.replica_partitions import PartitionWorker

log = logging.getLogger(__name__)

# How far down an exception's causes a driver error is looked for.
MAX_CAUSES = 8
# The SQLSTATE class blamed on the content: data exceptions.
DATA_EXCEPTION = "22"
# ``store_refused`` dead letters in a row from different devices (beyond the run's most
# refused device's), no message taken between, before the search stops: poison is one
# device's odd message, not the whole traffic.
MAX_REFUSED_IN_A_ROW = 8


class StoreRefusesAll(Exception):
    """The store refused message after message: the store is to blame, not the content."""


class ComeAgain(Exception):
    """The delivery's time is spent: it comes again and goes on from what committed."""


@dataclass(frozen=True)
class Refusal:
    """A commit the store refused for its content: the SQLSTATE and the error."""

    sqlstate: str
    error: Exception


def content_refusal(exc: BaseException) -> str | None:
    """The SQLSTATE when ``exc`` (or what caused it) is the store refusing the content it
    was given (class 22); "client" for the driver's own refusal before sending; None for
    any other failure, integrity constraints included (module docstring)."""
    seen: BaseException | None = exc
    for _ in range(MAX_CAUSES):
        if seen is None:
            break
        if isinstance(seen, psycopg.Error) and seen.sqlstate is not None:
            return seen.sqlstate if seen.sqlstate.startswith(DATA_EXCEPTION) else None
        if isinstance(seen, psycopg.DataError):  # refused by the driver, never sent
            return "client"
        if isinstance(seen, UnicodeEncodeError):
            return "client"
        seen = seen.__cause__
    return None


class Delivery:
    """One delivery of a partition through its worker, the poison messages isolated."""

    def __init__(
        self,
        worker: Callable[[], PartitionWorker],
        rebuild: Callable[[], None],
        messages: Sequence[IngestMessage],
        counts: Counter[str],
        budget_s: float,
    ) -> None:
        """``worker()``: the partition's worker; ``rebuild()`` makes it afresh from the
        store on its session, after a rolled-back commit. ``counts`` takes what each step
        commits (``already_committed``, ``store_refused``) as it commits."""
        self._worker, self._rebuild, self._messages = worker, rebuild, messages
        self._floor = min(m.stream_seq for m in messages)
        self._counts = counts
        self._deadline = time.monotonic() + budget_s
        self._stepped = False  # a half committed or a message dead-lettered

    def commit(self) -> None:
        """Commit the delivery. Raises when it must come again."""
        refusal = self._try(self._messages)
        if refusal is None:
            return
        log.warning(
            "partition %d: the store refused a batch of %d for its content (SQLSTATE %s):"
            " committing it in halves", self._messages[0].partition, len(self._messages),
            refusal.sqlstate,
        )  # fmt: skip
        self._isolate(self._messages, refusal)

    def _try(self, messages: Sequence[IngestMessage]) -> Refusal | None:
        """Commit ``messages``: None when done, the refusal when it was the content's;
        any other failure is raised (the worker is then ahead of the store: the caller
        drops it)."""
        try:
            skipped = self._worker().process(messages, self._floor)
        except Exception as exc:
            sqlstate = content_refusal(exc)
            if sqlstate is None:
                raise
            self._rebuild()
            return Refusal(sqlstate, exc)
        if skipped:
            self._counts["already_committed"] += skipped
        self._stepped = True
        return None

    def _isolate(self, messages: Sequence[IngestMessage], refused: Refusal) -> None:
        """``messages``, whose commit was refused for its content, in halves."""
        if len(messages) == 1:
            self._refuse(messages[0], refused)
            return
        middle = len(messages) // 2
        for half in (messages[:middle], messages[middle:]):
            if self._stepped and time.monotonic() >= self._deadline:
                raise ComeAgain(
                    f"partition {messages[0].partition}: the poison search spent its time;"
                    " the delivery comes again to go on"
                )
            again = self._try(half)
            if again is not None:
                self._isolate(half, again)

    def _refuse(self, message: IngestMessage, refused: Refusal) -> None:
        """One message the store refused: a dead letter, unless the store refuses all."""
        worker = self._worker()
        device = worker.device_of(message)
        if worker.committed.refused_across_devices(device) >= MAX_REFUSED_IN_A_ROW:
            raise StoreRefusesAll(
                f"partition {message.partition}: messages of different devices refused in a"
                f" row by the store (SQLSTATE {refused.sqlstate}), none taken between"
            ) from refused.error
        worker.refuse(message, device, refused.sqlstate, self._floor)
        self._counts["store_refused"] += 1
        self._stepped = True
        log.warning(
            "partition %d: the message at stream sequence %d is refused by the store"
            " (SQLSTATE %s): dead-lettered", message.partition, message.stream_seq,
            refused.sqlstate,
        )  # fmt: skip
