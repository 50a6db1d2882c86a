"""The gateway's MQTT batches commit on the pipeline's commit thread while the next batch
is prepared (gateway/commit_queue.py): what depends on the batches before still sees them.

The gateway is built from a real config over a real SQLite file (not started: its pipeline
is driven directly). Another connection holds the store's write lock, so the first batch's
commit is really stuck on the commit thread while the second batch is prepared.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import NamedTuple

import pytest
import yaml

from case_bridge.case_model import evidence_item
from gateway import store
from gateway.config import load_config
from gateway.service import Gateway
from simulators.scenario import BUILTIN_SCENARIO

REGISTRY = BUILTIN_SCENARIO.parent / "devices.csv"
NOW = int(time.time() * 1000)


class Message(NamedTuple):
    topic: str
    payload: bytes
    retain: bool = False


def lid(seq: int, open_: bool) -> Message:
    doc = {"ts": NOW - 10_000 + seq, "seq": seq, "values": {"tilt_deg": 1.0, "lid_open": open_}}
    return Message("citygw/v1/MH-001/telemetry", json.dumps(doc).encode())


@pytest.fixture
def gateway(tmp_path) -> Gateway:
    config = {
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "devices": {"registry": str(REGISTRY)},
        "store": {"path": str(tmp_path / "gateway.db")},
        "case_platform": {"url": "http://127.0.0.1:1", "token": "unused"},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    gw = Gateway(load_config(path))
    yield gw
    gw.pipeline.close()


def test_an_alerts_excerpt_holds_the_readings_of_the_batch_still_committing(gateway, tmp_path):
    pipeline = gateway.pipeline
    ticket, _ = pipeline.prepare([lid(seq, False) for seq in range(1, 6)], NOW)
    blocker = sqlite3.connect(
        tmp_path / "gateway.db", isolation_level=None, check_same_thread=False
    )
    blocker.execute("BEGIN IMMEDIATE")  # the store's write lock: the commit waits for it
    assert pipeline.start_commit()
    # The lock goes only once the excerpt asks for the batches before its alert: until
    # then the first batch's commit is stuck on the commit thread, whatever the timing.
    asked, settle = threading.Event(), gateway.excerpts._settle

    def asking() -> None:
        asked.set()
        settle()

    gateway.excerpts._settle = asking
    releaser = threading.Thread(target=lambda: asked.wait(30) and blocker.execute("COMMIT"))
    releaser.start()
    # The lid opens in the next batch: its alert's excerpt is written while it is prepared.
    _, commands = pipeline.prepare([lid(6, True)], NOW)
    releaser.join(30)
    assert asked.is_set()
    assert [c.alert.key for c in commands] == ["MH-001/cover_anomaly"]
    [file] = [f for f in evidence_item(commands[0].alert)["media_files"] if ".json?" in f["url"]]
    document = json.loads(gateway.evidence.read_linked(file["url"]))
    assert [r["seq"] for r in document["readings"]] == [1, 2, 3, 4, 5]
    assert pipeline.saved_upto == ticket
    pipeline.start_commit()
    pipeline.settle()
    assert store.count_rows(gateway.conn, "readings") == 6


def test_an_alerts_excerpt_holds_the_readings_of_batches_only_queued(gateway):
    """Batches prepared while a commit syncs wait, queued, for the next commit: the excerpt
    has them saved first."""
    pipeline = gateway.pipeline
    pipeline.prepare([lid(seq, False) for seq in range(1, 4)], NOW)
    second, _ = pipeline.prepare([lid(seq, False) for seq in range(4, 6)], NOW)
    assert pipeline.queued_batches == 2 and pipeline.committing is None
    _, commands = pipeline.prepare([lid(6, True)], NOW)
    [file] = [f for f in evidence_item(commands[0].alert)["media_files"] if ".json?" in f["url"]]
    document = json.loads(gateway.evidence.read_linked(file["url"]))
    assert [r["seq"] for r in document["readings"]] == [1, 2, 3, 4, 5]
    assert pipeline.saved_upto == second and pipeline.queued_batches == 1
