"""The ingest's store connection may leave WAL checkpoints to another connection
(gateway/store.py ``connect(autocheckpoint=False)``, ``checkpoint``): the writer's commits
then never copy the WAL, and a checkpoint elsewhere copies every frame."""

from __future__ import annotations

from pathlib import Path

from gateway import store


def wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


def commit_readings(conn, first: int, count: int) -> None:
    batch = store.Batch()
    batch.readings = [
        (f"D{n % 7}", n, n, '{"fill_pct":42.5}', 0) for n in range(first, first + count)
    ]
    store.commit(conn, batch)


def test_without_autocheckpoint_the_wal_grows_until_a_checkpoint_copies_it(tmp_path: Path):
    path = tmp_path / "gateway.db"
    writer = store.connect(path, autocheckpoint=False)
    other = store.connect(path)
    try:
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert other.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
        for at in range(0, 60_000, 2_000):  # well past SQLite's 1,000-page checkpoint
            commit_readings(writer, at, 2_000)
        assert wal_pages(path) > 1_000  # no commit copied the WAL
        busy, frames, copied = store.checkpoint(other)
        assert busy == 0 and frames > 1_000 and copied == frames
        assert other.execute("SELECT count(*) FROM readings").fetchone() == (60_000,)
    finally:
        writer.close()
        other.close()
