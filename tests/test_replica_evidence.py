"""Evidence in a city of replicas (``evidence.dir``): a picture one replica wrote is served,
byte for byte, by another replica's status server over real HTTP, because the replicas
share the folder and the link secret generated in it; the secret itself is never served;
replicas starting together agree on one secret; and without ``evidence.dir`` the embedded
gateway keeps its folder and secret beside the store, as before."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from evidence_pictures import ALERT, scene
from hypothesis import given, settings
from hypothesis import strategies as st

from case_bridge.case_model import evidence_item
from gateway.evidence import EvidenceWriter
from gateway.evidence_links import (
    GENERATED_SECRET_NAME,
    SHARED_SECRET_NAME,
    links_from_settings,
    load_link_secret,
)
from gateway.evidence_settings import EvidenceSettings
from gateway.replica_status import StatusSettings, status_app, status_server
from simulators.mosquitto import free_port


def replica_writer(settings: EvidenceSettings, store_folder: Path) -> EvidenceWriter:
    """The writer a replica makes (gateway/replica.py) for a store in ``store_folder``."""
    return EvidenceWriter(
        settings.folder(store_folder),
        links_from_settings(settings, store_folder),
        settings.max_picture_bytes,
    )


@dataclass
class ServedStatus:
    """A replica's status server on loopback, running in a thread of its own."""

    http: httpx.Client
    writer: EvidenceWriter


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[EvidenceSettings, EvidenceWriter, ServedStatus]]:
    """Replica r1 (writes a camera's pictures) and r2 (serves its status), each with a store
    folder of its own and one shared evidence folder."""
    root = tmp_path_factory.mktemp("replicas")
    shared = EvidenceSettings(dir=root / "shared-evidence")
    r1 = replica_writer(shared, root / "r1")
    r2 = replica_writer(shared, root / "r2")
    port = free_port()
    app = status_app(lambda: {"replica": "r2"}, time.monotonic, 60.0, r2)
    server = status_server(StatusSettings(port=port), app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "status server did not start"
        time.sleep(0.01)  # polling for readiness, not a fixed wait
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        yield shared, r1, ServedStatus(http, r2)
    server.should_exit = True
    thread.join(10)


def test_another_replica_serves_the_exact_picture_a_replica_wrote(cluster):
    shared, r1, r2 = cluster
    media = r1.save(ALERT, scene(3, 240, 320), scene(4, 240, 320), int(time.time()))
    files = evidence_item(replace(ALERT, media=media))["media_files"]
    assert len(files) == 2  # the annotated frame and the one before
    for file in files:
        reply = r2.http.get(file["url"])
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "image/jpeg"
        assert hashlib.sha256(reply.content).hexdigest() == file["sha256"]
        assert len(reply.content) == file["bytes"]
    # One secret, in the shared folder, readable by its owner only; none beside the stores.
    secret = shared.dir / SHARED_SECRET_NAME
    assert secret.stat().st_mode & 0o777 == 0o600
    assert not (r1.folder.parent / GENERATED_SECRET_NAME).exists()
    assert r2.http.get("/healthz").json()["ok"] is True
    assert r2.http.get("/stats").json() == {"replica": "r2"}


def test_the_shared_secret_is_never_served_and_forged_links_are_refused(cluster):
    _, _, r2 = cluster
    now = int(time.time())
    signed_secret = r2.writer.links.url(SHARED_SECRET_NAME, now)
    assert r2.http.get(signed_secret).status_code == 404  # signed, yet no evidence file
    name = "WL-7_1700000000000_excerpt_0123456789abcdef.json"
    good = r2.writer.save_file(name, b'{"readings": []}', now).partition("#")[0]
    reply = r2.http.get(good)
    assert (reply.status_code, reply.content) == (200, b'{"readings": []}')
    assert reply.headers["content-type"] == "application/json"
    assert r2.http.get(good.replace("sig=", "sig=0")[:-1]).status_code == 403
    assert r2.http.get(f"/evidence/{name}").status_code == 403
    assert r2.http.post(good).status_code == 405  # read-only


@settings(max_examples=50, deadline=None)
@given(
    name=st.text(min_size=1, max_size=80),
    exp=st.text(max_size=20),
    sig=st.text(max_size=70),
)
def test_no_unsigned_request_is_served(cluster, name, exp, sig):
    _, _, r2 = cluster
    reply = r2.http.get(f"/evidence/{quote(name, safe='')}", params={"exp": exp, "sig": sig})
    assert reply.status_code in (403, 404), (name, exp, sig)


def test_replicas_starting_together_generate_one_secret(tmp_path):
    """Replicas' processes in containers all have pid 1: drafts must not meet."""
    shared = EvidenceSettings(dir=tmp_path / "evidence")
    start = threading.Barrier(8)
    found: list[bytes] = []

    def replica(n: int) -> None:
        start.wait()
        found.append(load_link_secret(shared, tmp_path / f"r{n}"))

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(found) == 8 and len(set(found)) == 1
    assert sorted(p.name for p in shared.dir.iterdir()) == [SHARED_SECRET_NAME]


def test_the_embedded_gateway_keeps_evidence_beside_its_store(tmp_path):
    embedded = EvidenceSettings()
    writer = replica_writer(embedded, tmp_path)
    assert writer.folder == tmp_path / "evidence"
    assert (tmp_path / GENERATED_SECRET_NAME).exists()
    assert not (tmp_path / "evidence" / SHARED_SECRET_NAME).exists()
