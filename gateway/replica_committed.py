"""What a partition has committed of the deliveries still ahead of its consumer's acks, kept
in the shared store with the commits themselves (gateway/replica_partitions.py).

A delivery can come again after it committed: its ack was lost, or the session was lost
during COMMIT, so the outcome was in doubt and the worker was rebuilt from the store, or a
failure between the halves of a batch the store refused for one message's content
(gateway/replica_poison.py) left half of it committed. The replay guard would then refuse
every message that did commit as a ``duplicate`` dead letter: a false one, the reading is
stored once. Each commit therefore writes, in its own transaction, which messages it took
(their stream sequences, with a digest of each payload), and the next delivery skips
exactly those. The digest keeps a stream made anew, whose sequences start again at 1, from
skipping anything but the very same bytes.

Only the deliveries not yet behind the consumer are kept: a delivery starts at the oldest
unacked message of the partition, so entries below its lowest stream sequence are acked and
dropped. The record also counts the ``store_refused`` dead letters written in a row with no
message taken between: the poison search stops at a bound, since a store that refuses
message after message is broken, not fed poison.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from devices.nats_ingest import IngestMessage

# State namespace of the record (key: the partition).
COMMITTED_NS = "ingest_committed"
# Entries kept at most: two deliveries of the largest batch (NatsIngestSettings.batch_size).
MAX_ENTRIES = 20_000


def payload_digest(payload: bytes) -> int:
    """32 bits of BLAKE2b: the same stream sequence with other bytes is another message
    (two messages of one sequence number meet only in a stream made anew; that they also
    share a digest is a chance of one in four billion)."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=4).digest(), "big")


@dataclass(frozen=True)
class Committed:
    """A partition's record: stream sequence → payload digest of the messages committed,
    and the ``store_refused`` dead letters written since a message was last taken."""

    entries: dict[int, int] = field(default_factory=dict)
    refused_in_a_row: int = 0

    def split(self, messages: Sequence[IngestMessage]) -> tuple[list[IngestMessage], list[int]]:
        """The messages not committed yet, and every message's digest."""
        digests = [payload_digest(m.payload) for m in messages]
        pairs = zip(messages, digests, strict=True)
        return [m for m, d in pairs if self.entries.get(m.stream_seq) != d], digests

    def after(
        self, messages: Sequence[IngestMessage], digests: list[int], floor: int, refused: bool
    ) -> Committed:
        """The record once ``messages`` commit, in a delivery whose lowest stream sequence
        is ``floor``; ``refused``: as a ``store_refused`` dead letter, else taken (a commit
        of nothing new leaves the count as it was)."""
        entries = {seq: d for seq, d in self.entries.items() if seq >= floor}
        fresh = any(entries.get(m.stream_seq) != d for m, d in zip(messages, digests, strict=True))
        entries.update(zip((m.stream_seq for m in messages), digests, strict=True))
        if len(entries) > MAX_ENTRIES:
            entries = dict(sorted(entries.items())[-MAX_ENTRIES:])
        if refused:
            return Committed(entries, self.refused_in_a_row + 1)
        return Committed(entries, 0 if fresh else self.refused_in_a_row)


def load(conn: Any, partition: int) -> Committed:
    """The partition's record as the store holds it."""
    row = conn.execute(
        "SELECT value FROM state WHERE ns = ? AND key = ?", (COMMITTED_NS, str(partition))
    ).fetchone()
    if row is None:
        return Committed()
    value = json.loads(row[0])
    seqs = itertools.accumulate(value["gaps"])
    return Committed(dict(zip(seqs, value["digests"], strict=True)), value["refused_in_a_row"])


def write(conn: Any, *, partition: int, record: Committed) -> None:
    """The record, inside the commit of the messages it names: each sequence as its gap
    from the one before (a partition's messages lie close together in the stream), a
    fraction of the numbers' own text, for a write that every batch makes."""
    seqs = sorted(record.entries)
    value = json.dumps(
        {"gaps": [b - a for a, b in zip([0, *seqs], seqs, strict=False)],
         "digests": [record.entries[seq] for seq in seqs],
         "refused_in_a_row": record.refused_in_a_row}
    )  # fmt: skip
    conn.execute(
        "INSERT INTO state (ns, key, value) VALUES (?, ?, ?)"
        " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
        (COMMITTED_NS, str(partition), value),
    )
