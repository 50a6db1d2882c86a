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

A delivery starts at the oldest unacked message of the partition, so entries below its
lowest stream sequence are acked and dropped: what is kept is the deliveries not yet behind
the consumer, and, after the stream was made anew, the old stream's entries above the new
sequences until those pass them (a delivery's worth at most; their digests keep them from
skipping anything meanwhile). The record also counts, per device, the ``store_refused``
dead letters written in a row with no message taken between: the poison search stops at a
bound when they come from different devices, since a store that refuses message after
message is broken, not fed poison, while one device's refusals are its own content's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
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
    and device → the ``store_refused`` dead letters written since a message was last taken
    (the run)."""

    entries: dict[int, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    def split(self, messages: Sequence[IngestMessage]) -> tuple[list[IngestMessage], list[int]]:
        """The messages not committed yet, and every message's digest."""
        digests = [payload_digest(m.payload) for m in messages]
        pairs = zip(messages, digests, strict=True)
        return [m for m, d in pairs if self.entries.get(m.stream_seq) != d], digests

    def refused_across_devices(self, device: str) -> int:
        """The run's dead letters beyond those of its most refused device, were a message
        of ``device`` refused too: refusals that all come from one device are that
        device's content and count for nothing."""
        run = self._run_with(device)
        return run.total() - max(run.values())

    def _run_with(self, device: str) -> Counter[str]:
        """The run once a message of ``device`` is dead-lettered too."""
        run = Counter(self.refused)
        run[device] += 1
        return run

    def after(
        self,
        messages: Sequence[IngestMessage],
        digests: list[int],
        floor: int,
        refused_device: str | None,
    ) -> Committed:
        """The record once ``messages`` commit, in a delivery whose lowest stream sequence
        is ``floor``: as a ``store_refused`` dead letter of ``refused_device``, or (None)
        taken, which ends the run (a commit of nothing new leaves it as it was)."""
        entries = {seq: d for seq, d in self.entries.items() if seq >= floor}
        fresh = any(entries.get(m.stream_seq) != d for m, d in zip(messages, digests, strict=True))
        entries.update(zip((m.stream_seq for m in messages), digests, strict=True))
        if len(entries) > MAX_ENTRIES:
            entries = dict(sorted(entries.items())[-MAX_ENTRIES:])
        if refused_device is not None:
            return Committed(entries, dict(self._run_with(refused_device)))
        return Committed(entries, {} if fresh else self.refused)


def load(conn: Any, partition: int) -> Committed:
    """The partition's record as the store holds it."""
    row = conn.execute(
        "SELECT value FROM state WHERE ns = ? AND key = ?", (COMMITTED_NS, str(partition))
    ).fetchone()
    if row is None:
        return Committed()
    value = json.loads(row[0])
    seqs = itertools.accumulate(value["gaps"])
    return Committed(dict(zip(seqs, value["digests"], strict=True)), value["refused"])


def write(conn: Any, *, partition: int, record: Committed) -> None:
    """The record, inside the commit of the messages it names: each sequence as its gap
    from the one before (a partition's messages lie close together in the stream), a
    fraction of the numbers' own text, for a write that every batch makes."""
    seqs = sorted(record.entries)
    value = json.dumps(
        {"gaps": [b - a for a, b in zip([0, *seqs], seqs, strict=False)],
         "digests": [record.entries[seq] for seq in seqs],
         "refused": record.refused}
    )  # fmt: skip
    conn.execute(
        "INSERT INTO state (ns, key, value) VALUES (?, ?, ?)"
        " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
        (COMMITTED_NS, str(partition), value),
    )
