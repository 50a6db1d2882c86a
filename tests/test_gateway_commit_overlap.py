"""The gateway's MQTT batches commit on the pipeline's commit thread while the next batch
is prepared (gateway/commit_queue.py): what depends on the batches before still sees them.

The gateway is built from a real config over a real SQLite file (not started: its pipeline
is driven directly). Another connection holds the store's write lock, so the first batch's
commit is really stuck on the commit thread while the second batch is prepared.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import NamedTuple

import pytest

from case_bridge.case_model import evidence_item
from gateway import store
from gateway.pipeline import StoreUnavailable
from gateway.service import Gateway

NOW = int(time.time() * 1000)


class Message(NamedTuple):
    topic: str
    payload: bytes
    retain: bool = False


def lid(seq: int, open_: bool) -> Message:
    doc = {"ts": NOW - 10_000 + seq, "seq": seq, "values": {"tilt_deg": 1.0, "lid_open": open_}}
    return Message("citygw/v1/MH-001/telemetry", json.dumps(doc).encode())


def excerpt_seqs(gateway: Gateway, commands: list) -> list[int]:
    """The sequence numbers in the excerpt filed with the one command's alert."""
    [command] = commands
    assert command.alert.key == "MH-001/cover_anomaly"
    [file] = [f for f in evidence_item(command.alert)["media_files"] if ".json?" in f["url"]]
    document = json.loads(gateway.evidence.read_linked(file["url"]))
    return [r["seq"] for r in document["readings"]]


def test_an_alerts_excerpt_holds_the_readings_of_the_batch_still_committing(gateway, tmp_path):
    """The first batch's commit is stuck on the store's write lock for the whole time the
    lid-open batch is prepared: the excerpt takes its readings from memory, not waiting."""
    pipeline = gateway.pipeline
    ticket, _ = pipeline.prepare([lid(seq, False) for seq in range(1, 6)], NOW)
    blocker = sqlite3.connect(
        tmp_path / "gateway.db", isolation_level=None, check_same_thread=False
    )
    blocker.execute("BEGIN IMMEDIATE")  # the store's write lock: the commit waits for it
    assert pipeline.start_commit()
    _, commands = pipeline.prepare([lid(6, True)], NOW)
    assert pipeline.committing is not None and not pipeline.committing.done()
    assert excerpt_seqs(gateway, commands) == [1, 2, 3, 4, 5]
    blocker.execute("COMMIT")
    pipeline.settle()
    assert pipeline.saved_upto == ticket
    pipeline.start_commit()
    pipeline.settle()
    assert store.count_rows(gateway.conn, "readings") == 6


def test_an_alerts_excerpt_holds_the_readings_of_batches_only_queued(gateway):
    """Batches prepared while a commit syncs wait, queued, for the next commit; a reading
    stored and the same one still queued (a commit done, not yet settled) count once."""
    pipeline = gateway.pipeline
    pipeline.prepare([lid(seq, False) for seq in range(1, 4)], NOW)
    pipeline.start_commit()
    pipeline.committing.result(10)  # committed, not settled: in the store and in memory
    pipeline.prepare([lid(seq, False) for seq in range(4, 6)], NOW)
    assert pipeline.queued_batches == 1
    _, commands = pipeline.prepare([lid(6, True)], NOW)
    assert excerpt_seqs(gateway, commands) == [1, 2, 3, 4, 5]
    assert pipeline.saved_upto == 0 and pipeline.queued_batches == 2


def test_a_threshold_change_saves_the_queued_batches_first_or_stores_nothing(gateway):
    """A new version's transaction writes the engines' state: the batches queued before it
    hold older state and are saved first (``settle``). A store that refuses them stores no
    version at all."""
    pipeline, versions = gateway.pipeline, gateway.threshold_versions
    before = versions.current().version
    pipeline.prepare([lid(seq, False) for seq in range(1, 501)], NOW)
    pages = gateway.pipeline_conn.execute("PRAGMA page_count").fetchone()[0]
    gateway.pipeline_conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreUnavailable):
        versions.set({"kinds.bin.fill_fire_pct": 87}, "ops", "test", None, gateway.apply_settings)
    assert versions.current().version == before
    assert store.count_rows(gateway.conn, "readings") == 0
    gateway.pipeline_conn.execute("PRAGMA max_page_count = 1073741823")
    recorded = versions.set(
        {"kinds.bin.fill_fire_pct": 87}, "ops", "test", None, gateway.apply_settings
    )
    assert recorded.latest.version == before + 1
    assert store.count_rows(gateway.conn, "readings") == 500 and pipeline.queued_batches == 0
