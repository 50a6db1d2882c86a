"""The MQTT consumer (gateway/service.py ``_consume``) against a real SQLite store: it keeps
preparing while a commit is stuck, stops at the queued-batch cap, and after the store
refused that commit and took it again it goes on with the messages left behind.

The gateway is built, not started (conftest's ``gateway``); messages reach its MQTT ingest
as paho's network thread hands over a socket read's PUBLISH packets (``_on_publishes``),
QoS 0, so nothing needs acknowledging on a broker. The store refuses for real: another
connection holds its write lock past the commit's busy timeout ("database is locked").
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time

from test_nats_ingest import until

from gateway import store
from gateway.service import QUEUED_BATCHES_MAX, Gateway

NOW = int(time.time() * 1000)


def publishes(first: int, count: int) -> list[tuple[bytes, bytes, int, int, bool]]:
    """PUBLISH packets as paho's thread hands them over: (topic, payload, mid, qos, retain)."""
    values = {"tilt_deg": 0.5, "lid_open": False}
    docs = (
        {"ts": NOW - 10_000_000 + seq, "seq": seq, "values": values}
        for seq in range(first, first + count)
    )
    return [(b"citygw/v1/MH-001/telemetry", json.dumps(doc).encode(), 0, 0, False) for doc in docs]


def test_a_refused_commit_at_the_cap_does_not_leave_messages_behind(gateway: Gateway, tmp_path):
    gateway.config.ingest.batch_max = 2
    pipeline = gateway.pipeline
    blocker = sqlite3.connect(
        tmp_path / "gateway.db", isolation_level=None, check_same_thread=False
    )
    more = 2 * (QUEUED_BATCHES_MAX + 3)

    async def main() -> int:
        gateway._loop = asyncio.get_running_loop()
        gateway._build_parts()  # the MQTT ingest, not connected
        ingest = gateway.ingest
        assert ingest is not None
        consumer = asyncio.create_task(gateway._consume(ingest._ready))

        def hand_over(first: int, count: int) -> None:  # from a thread, as paho's
            thread = threading.Thread(target=ingest._on_publishes, args=(publishes(first, count),))
            thread.start()
            thread.join()

        try:
            blocker.execute("BEGIN IMMEDIATE")  # the store's write lock
            hand_over(1, 1)
            await until(lambda: pipeline.committing is not None, "the first commit", 30)
            hand_over(2, more)
            await until(lambda: pipeline.queued_batches == QUEUED_BATCHES_MAX, "the cap", 30)
            assert not pipeline.committing.done()  # prepared while the commit is stuck
            hand_over(2 + more, 1)  # after the consumer's last take
            await until(lambda: pipeline.unsaved, "the store refusing the commit", 30)
            blocker.execute("COMMIT")
            total = 2 + more
            await until(
                lambda: store.count_rows(gateway.conn, "readings") == total, "every reading", 30
            )
            return total
        finally:
            consumer.cancel()

    total = asyncio.run(main())
    assert store.count_rows(gateway.conn, "readings") == total
    # At least one: a retry after the lock went can still meet it on a slow machine.
    assert not pipeline.unsaved and pipeline.counters["commit_failures"] >= 1
