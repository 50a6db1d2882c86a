"""Evidence pictures as cases carry them: each picture's SHA-256 and size beside its signed
link, the same after the command went through the outbox, and pictures above the size
limit encoded smaller or left out and counted."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from evidence_pictures import ALERT, STEM, scene

from case_bridge import outbox
from case_bridge.case_model import evidence_body, evidence_item, open_case_body
from case_bridge.codes import ClassCatalog
from case_bridge.settings import CaseSettings
from domain import CaseCommand, CommandKind, Priority
from gateway import store
from gateway.evidence import JPEG_QUALITY, EvidenceWriter
from gateway.evidence_links import EvidenceLinks

NOW = 1_800_000_000
LINKS = EvidenceLinks(b"s" * 32, 3600, "https://gw.example.org")


def jpeg_size(image: np.ndarray, quality: int) -> int:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].size


def test_each_picture_is_on_the_case_with_the_hash_and_size_of_its_file(tmp_path: Path):
    writer = EvidenceWriter(tmp_path, LINKS, max_picture_bytes=32 * 2**20)
    media = writer.save(ALERT, scene(1), scene(2), NOW)
    files = evidence_item(replace(ALERT, media=media))["media_files"]
    assert [Path(f["url"].split("?")[0]).name for f in files] == [
        f"{STEM}.jpg",
        f"{STEM}_before.jpg",
    ]
    for file in files:
        data = (tmp_path / Path(file["url"].split("?")[0]).name).read_bytes()
        assert file == {
            "url": LINKS.url(Path(file["url"].split("?")[0]).name, NOW),
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
        assert data[:2] == b"\xff\xd8"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{STEM}.jpg", f"{STEM}_before.jpg"]
    assert writer.refused == {}


def test_the_outbox_body_carries_the_same_hashes(tmp_path: Path):
    writer = EvidenceWriter(tmp_path / "evidence", LINKS, max_picture_bytes=32 * 2**20)
    alert = replace(ALERT, media=writer.save(ALERT, scene(1), None, NOW))
    conn = store.connect(tmp_path / "gateway.db", "NORMAL")
    batch = store.Batch()
    for kind in (CommandKind.OPEN, CommandKind.ATTACH):
        command = CaseCommand(f"cmd-{kind}", "INC-1", kind, alert, Priority.NORMAL)
        batch.also.append(lambda c, command=command: outbox.enqueue(c, command, 1000))
    store.commit(conn, batch)
    opened, attached = [row.command for row in outbox.pending(conn)]
    conn.close()
    settings = CaseSettings()
    data = (tmp_path / "evidence" / f"{STEM}.jpg").read_bytes()
    expected = {"url": LINKS.url(f"{STEM}.jpg", NOW), "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data)}  # fmt: skip
    for body in (
        open_case_body(opened, ClassCatalog(settings.local_classes), settings),
        evidence_body(attached, settings),
    ):
        assert body["evidence"][0]["media"] == [expected["url"]]  # no fragment for platforms
        assert body["evidence"][0]["media_files"] == [expected]


def test_a_picture_above_the_limit_is_encoded_smaller(tmp_path: Path):
    image = scene(3)
    usual, smallest = jpeg_size(image, JPEG_QUALITY), jpeg_size(image, 40)
    assert smallest < usual * 0.8
    writer = EvidenceWriter(tmp_path, LINKS, max_picture_bytes=(usual + smallest) // 2)
    [entry] = writer.save(ALERT, image, None, NOW)
    size = (tmp_path / f"{STEM}.jpg").stat().st_size
    assert smallest <= size <= (usual + smallest) // 2
    assert entry.endswith(f"&bytes={size}")
    assert writer.refused == {}


def test_a_picture_too_large_at_any_quality_is_left_out_and_counted(tmp_path: Path):
    drawn, before = scene(4), np.zeros((48, 64, 3), np.uint8)  # the flat "before" fits
    writer = EvidenceWriter(tmp_path, LINKS, max_picture_bytes=jpeg_size(drawn, 40) - 1)
    [entry] = writer.save(ALERT, drawn, before, NOW)
    assert entry.startswith(f"https://gw.example.org/evidence/{STEM}_before.jpg?exp=")
    assert [p.name for p in tmp_path.iterdir()] == [f"{STEM}_before.jpg"]
    assert writer.refused == {"too_large": 1}


@pytest.mark.parametrize(
    "entry",
    [
        "/api/v1/evidence/a_1.jpg",  # an alert filed before hashes were recorded
        "https://x/evidence/a_1.jpg#sha256=ABC&bytes=1",  # not a hash this gateway writes
        "https://x/evidence/a_1.jpg#sha256=" + "0" * 64 + "&bytes=1&more",
    ],
)
def test_a_media_entry_without_a_hash_is_kept_as_it_is(entry):
    item = evidence_item(replace(ALERT, media=(entry,)))
    assert (item["media"], item["media_files"]) == ([entry], [{"url": entry}])
