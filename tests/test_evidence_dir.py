"""``evidence.dir`` as a config sets it: a relative folder is the config file's, like every
other path in it; setting it later keeps the links already handed out (the secret generated
beside the store is adopted into the folder, once, however many processes start together);
and a folder whose file system has no hard links is refused at start by name."""

from __future__ import annotations

import errno
import logging
import os
import textwrap
import threading
import time

import pytest

from gateway import evidence_links
from gateway.config import load_config
from gateway.evidence_links import (
    GENERATED_SECRET_NAME,
    SHARED_SECRET_NAME,
    links_from_settings,
    load_link_secret,
)
from gateway.evidence_settings import EvidenceSettings


def test_a_relative_evidence_dir_is_the_config_files_folder(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "devices.csv").write_text(
        "device_id,kind,lat,lon,address,grid_code,part_code,warning_cm,alarm_cm\n", "utf-8"
    )
    (conf / "gw.yaml").write_text(
        textwrap.dedent("""\
        mqtt: {url: "mqtt://127.0.0.1:1883"}
        devices: {registry: devices.csv}
        store: {path: var/gw.db}
        case_platform: {url: "http://127.0.0.1:8081", token: t}
        evidence: {dir: shared/evidence}
        """),
        "utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(conf / "gw.yaml")
    assert config.evidence.dir == conf.resolve() / "shared" / "evidence"


def test_setting_evidence_dir_keeps_the_links_already_handed_out(tmp_path, caplog):
    store = tmp_path / "store"
    before = links_from_settings(EvidenceSettings(), store)
    now = int(time.time())
    issued = before.url("CAM-1_1700000000000.jpg", now)
    shared = EvidenceSettings(dir=tmp_path / "evidence")
    with caplog.at_level(logging.INFO, "gateway.evidence_links"):
        after = links_from_settings(shared, store)
    assert after.refreshed(issued, now) == issued  # still ours: the same secret signs it
    adopted = shared.dir / SHARED_SECRET_NAME
    assert adopted.read_bytes() == (store / GENERATED_SECRET_NAME).read_bytes()
    assert adopted.stat().st_mode & 0o777 == 0o600
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["evidence link secret"]
    caplog.clear()
    with caplog.at_level(logging.INFO, "gateway.evidence_links"):
        links_from_settings(shared, store)  # a restart: nothing adopted again
    assert caplog.records == []


def test_replicas_starting_together_adopt_the_one_secret_once(tmp_path, caplog):
    store = tmp_path / "store"
    old = load_link_secret(EvidenceSettings(), store)
    shared = EvidenceSettings(dir=tmp_path / "evidence")
    start = threading.Barrier(8)
    found: list[bytes] = []

    def replica() -> None:
        start.wait()
        found.append(load_link_secret(shared, store))

    threads = [threading.Thread(target=replica) for _ in range(8)]
    with caplog.at_level(logging.INFO, "gateway.evidence_links"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert found == [old] * 8
    assert len(caplog.records) == 1  # the one that created it says so
    assert sorted(p.name for p in shared.dir.iterdir()) == [SHARED_SECRET_NAME]


def test_a_folder_without_hard_links_is_refused_by_name(tmp_path, monkeypatch):
    def no_hard_links(src: object, dst: object) -> None:
        """Fake: a volume that has none (this machine's file systems all do)."""
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(evidence_links.os, "link", no_hard_links)
    folder = tmp_path / "nfs-evidence"
    with pytest.raises(ValueError) as error:
        load_link_secret(EvidenceSettings(dir=folder), tmp_path / "store")
    assert str(error.value).startswith(
        f"{folder}: cannot create the evidence link secret there: the folder's file system"
        " gives no hard links (Operation not permitted)"
    )
    assert list(folder.iterdir()) == []  # no draft left behind
