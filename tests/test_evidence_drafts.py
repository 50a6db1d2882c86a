"""Drafts a killed writer left in the evidence folder (``.NAME.PID.HEX.draft``: a file's,
gateway/evidence.py, or the link secret's, gateway/evidence_links.py) are removed by
retention once an hour old, counted with the evidence removed; a younger draft (a write
that may be under way), the evidence, the secret and names of another shape are kept."""

from __future__ import annotations

import os
import time

from gateway import retention
from gateway.evidence_links import SHARED_SECRET_NAME

NAME = "CAM-1_1700000000000.jpg"


def test_retention_removes_drafts_an_hour_old_and_nothing_else(tmp_path):
    folder = tmp_path / "evidence"
    folder.mkdir()
    now_s = time.time()
    old = {
        f".{NAME}.1.0123456789abcdef.draft": now_s - 3601,
        f".{SHARED_SECRET_NAME}.1.fedcba9876543210.draft": now_s - 86_400,
    }
    kept = {
        f".{NAME}.7.00112233445566ff.draft": now_s - 3500,  # maybe still being written
        NAME: now_s - 7200,
        SHARED_SECRET_NAME: now_s - 86_400,
        f".{NAME}.1.0123.draft": now_s - 86_400,  # not our draft's shape
        "notes.draft": now_s - 86_400,
    }
    for name, mtime in {**old, **kept}.items():
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (mtime, mtime))
    deleted = retention.expire_evidence(folder, now_s - 86_400 * 90, 2**30)
    assert deleted == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)


def test_the_hour_is_counted_from_the_clock_given(tmp_path):
    """upkeep passes its own ``now_ms``, an hour before it, as ``drafts_before_s``."""
    folder = tmp_path / "evidence"
    folder.mkdir()
    draft = folder / f".{NAME}.1.0123456789abcdef.draft"
    draft.write_bytes(b"x")
    written_s = draft.stat().st_mtime
    assert retention.expire_evidence(folder, 0, 2**30, drafts_before_s=written_s) == 0
    assert retention.expire_evidence(folder, 0, 2**30, drafts_before_s=written_s + 1) == 1
    assert list(folder.iterdir()) == []
