"""Evidence in a city of replicas (``evidence.dir``): a picture one replica wrote is served,
byte for byte, by another replica's evidence server over real HTTP, because the replicas
share the folder and the link secret generated in it; the secret itself is never served;
the evidence listener and the status listener serve nothing of each other's, and readers
that never take their picture neither hold the evidence listener past its deadline nor
touch ``/healthz``; replicas starting together agree on one secret; and without
``evidence.dir`` the embedded gateway keeps its folder and secret beside the store."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from evidence_pictures import ALERT, scene
from hypothesis import given, settings
from hypothesis import strategies as st

from case_bridge.case_model import evidence_item
from gateway.evidence import EvidenceWriter, read_evidence
from gateway.evidence_links import (
    GENERATED_SECRET_NAME,
    SHARED_SECRET_NAME,
    links_from_settings,
    load_link_secret,
)
from gateway.evidence_server import EvidenceServerSettings, evidence_server
from gateway.evidence_settings import EvidenceSettings
from gateway.replica_status import StatusSettings, status_app, status_server
from simulators.mosquitto import free_port

# Small, so a test fills the evidence listener and waits out its deadline in about a second.
EVIDENCE_SERVER = EvidenceServerSettings(port=1, max_connections=4, response_deadline_s=1.0)


def replica_writer(settings: EvidenceSettings, store_folder: Path) -> EvidenceWriter:
    """The writer a replica makes (gateway/replica.py) for a store in ``store_folder``."""
    return EvidenceWriter(
        settings.folder(store_folder),
        links_from_settings(settings, store_folder),
        settings.max_picture_bytes,
    )


@contextmanager
def running(server: uvicorn.Server) -> Iterator[None]:
    """``server`` serving in a thread of its own until the block ends."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)  # polling for readiness, not a fixed wait
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class ServedReplica:
    """A replica's status and evidence listeners on loopback."""

    http: httpx.Client  # the evidence listener
    status: httpx.Client
    evidence_port: int
    writer: EvidenceWriter


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[tuple[EvidenceSettings, EvidenceWriter, ServedReplica]]:
    """Replica r1 (writes a camera's pictures) and r2 (serves links and its status), each
    with a store folder of its own and one shared evidence folder."""
    root = tmp_path_factory.mktemp("replicas")
    shared = EvidenceSettings(dir=root / "shared-evidence")
    r1 = replica_writer(shared, root / "r1")
    r2 = replica_writer(shared, root / "r2")
    status_port, evidence_port = free_port(), free_port()
    app = status_app(lambda: {"replica": "r2"}, time.monotonic, 60.0)
    evidence = EVIDENCE_SERVER.model_copy(update={"port": evidence_port})
    with ExitStack() as stack:
        stack.enter_context(running(status_server(StatusSettings(port=status_port), app)))
        stack.enter_context(running(evidence_server(evidence, r2)))
        http = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{evidence_port}"))
        status = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{status_port}"))
        yield shared, r1, ServedReplica(http, status, evidence_port, r2)


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
    assert r2.status.get("/healthz").json()["ok"] is True
    assert r2.status.get("/stats").json() == {"replica": "r2"}


def test_each_listener_serves_only_its_own_paths(cluster):
    _, r1, r2 = cluster
    media = r1.save(ALERT, scene(5, 120, 160), None, int(time.time()))
    link = media[0].partition("#")[0]
    assert r2.http.get(link).status_code == 200
    assert r2.status.get(link).status_code == 404  # no evidence on the status listener
    assert r2.http.get("/stats").status_code == 404  # nor its status on the public one
    assert r2.http.get("/healthz").status_code == 404


def test_readers_that_never_take_a_picture_are_cut_off_and_never_touch_healthz(cluster):
    """Connections that ask for an 8 MB file and read none of it fill an evidence listener
    (503 to the next reader) while /healthz answers 200; past the response deadline each is
    cut off short of its bytes and the listener serves again."""
    _, _, r2 = cluster
    name = "WL-9_1700000000000_excerpt_00000000000000ff.json"
    size = 8 * 1024 * 1024
    link = r2.writer.save_file(name, b"0" * size, int(time.time())).partition("#")[0]
    port = free_port()  # a listener of its own: no other test's kept-alive connection in it
    with (
        running(evidence_server(EVIDENCE_SERVER.model_copy(update={"port": port}), r2.writer)),
        ExitStack() as stack,
    ):
        stalled = []
        for _ in range(EVIDENCE_SERVER.max_connections - 1):  # uvicorn counts the probe too
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {link} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stalled.append(sock)
        url = f"http://127.0.0.1:{port}{link}"
        full_at = time.monotonic()
        while (probe := httpx.get(url)).status_code != 503:  # until every stalled one is in
            assert time.monotonic() - full_at < 5, "the stalled readers never filled it"
        assert r2.status.get("/healthz").status_code == 200
        while (probe := httpx.get(url)).status_code == 503:
            assert time.monotonic() - full_at < 10, "the stalled readers were never cut off"
        assert probe.status_code == 200 and len(probe.content) == size
        assert time.monotonic() - full_at >= EVIDENCE_SERVER.response_deadline_s * 0.9
        assert all(received(sock) < size for sock in stalled)


def test_serving_a_file_takes_its_size_in_memory_not_the_limit(cluster):
    _, _, r2 = cluster
    name = "WL-9_1700000000000_excerpt_0000000000000001.json"
    r2.writer.save_file(name, b"{}", int(time.time()))
    tracemalloc.start()
    try:
        assert read_evidence(r2.writer.folder, name) == b"{}"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # not MAX_EVIDENCE_BYTES (32 MB) per reader


def received(sock: socket.socket) -> int:
    """How many bytes ``sock`` gets before the server ends the connection."""
    sock.settimeout(5)
    total = 0
    try:
        while chunk := sock.recv(1 << 16):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


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
