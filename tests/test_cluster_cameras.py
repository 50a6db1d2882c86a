"""Cameras on several replicas, end to end on real footage: two RTSP cameras watching one
no-dumping zone are leased to two replicas, and their alerts still make one case; the
replica holding one camera is SIGKILLed mid-incident, the camera moves to a live replica,
and the case is neither doubled nor lost, nor its pictures: they are in the replicas' shared
evidence folder, and every live replica serves each of the case's links with the exact
bytes the case records (nats-server, PostgreSQL, three replicas, the bundled platform and
the project's RTSP server, all real processes on loopback)."""

from __future__ import annotations

import hashlib

import pytest
from cluster_harness import ClusterStack
from test_e2e_camera_cases import needs_model, video_config

from simulators.footage import (
    BUILTIN_FOOTAGE,
    DEFAULT_ASSETS,
    build_footage,
    footage_truth,
    load_footage_scenario,
)
from simulators.mosquitto import free_port
from simulators.postgres import PostgresServer
from simulators.rtsp_server import RtspServerProcess
from simulators.truth import compare_cases

pytestmark = needs_model


@pytest.fixture
def street(tmp_path):
    scenario = load_footage_scenario(BUILTIN_FOOTAGE, DEFAULT_ASSETS)
    clip = build_footage(scenario, tmp_path / "footage")
    mounts = [f"/{camera}=file:{clip}" for camera in scenario.cameras]
    server = RtspServerProcess(mounts, free_port(), log=tmp_path / "rtsp.log")
    server.start()
    with PostgresServer() as postgres:
        workdir = tmp_path / "cluster"
        workdir.mkdir()
        stack = ClusterStack(
            workdir, postgres.dsn(), config={"video": video_config(scenario, server)}
        )
        try:
            yield server, stack, footage_truth(scenario)
        finally:
            stack.stop()
            server.stop()


def holders_of_cameras(c: ClusterStack) -> dict[str, str]:
    """camera → the replica running it with its stream online."""
    return {
        camera: name
        for name, stats in c.live_stats().items()
        for camera, figures in stats["cameras"].items()
        if figures["status"] == "online"
    }


def sources(case: dict, state: str) -> list[str]:
    return sorted({e["source_id"] for e in case["evidence"] if e["state"] == state})


def pictures(case: dict, camera: str) -> dict[str, tuple[str, int]]:
    """link → (sha256, bytes) of the camera's pictures, as recorded on the case."""
    return {
        item["url"]: (item["sha256"], item["bytes"])
        for evidence in case["evidence"]
        if evidence["source_id"] == camera
        for item in evidence.get("media_files", ())
    }


def served(c: ClusterStack, replica: str, links: dict[str, tuple[str, int]]) -> dict:
    """link → (sha256, bytes) of what ``replica`` serves for each link (None: refused)."""
    found = {}
    for link in links:
        reply = c.evidence(replica, link)
        body = reply.content
        found[link] = (hashlib.sha256(body).hexdigest(), len(body)) if reply.is_success else None
    return found


def test_two_cameras_on_two_replicas_are_one_case_and_a_camera_moves_when_its_replica_dies(
    street,
):
    _, c, truth = street
    c.start(replicas=3)
    c.wait_until(lambda: len(holders_of_cameras(c)) == 2, "both cameras online", 120)
    holders = holders_of_cameras(c)
    assert holders["CAM-A"] != holders["CAM-B"]  # the leases dealt them to two replicas

    def seen_by_both() -> bool:
        return [sources(case, "firing") for case in c.cases()] == [["CAM-A", "CAM-B"]]

    c.wait_until(seen_by_both, "the dumping case filed with both cameras' evidence", 90)
    dead = holders["CAM-A"]
    (case,) = c.cases()
    taken = pictures(case, "CAM-A")
    assert len(taken) == 2  # the annotated frame and the one before, each with its hash
    # Another replica serves the pictures CAM-A's replica wrote, byte for byte.
    assert served(c, holders["CAM-B"], taken) == taken
    c.replicas[dead].kill()
    c.wait_until(
        lambda: holders_of_cameras(c).get("CAM-A") not in (None, dead),
        "CAM-A running on a live replica",
        60,
    )

    def cleared() -> bool:
        cases = c.cases()
        return len(cases) == 1 and "CAM-B" in sources(cases[0], "cleared")

    c.wait_until(cleared, "the case cleared by the camera that stayed", 90)
    report = compare_cases(truth, c.cases())
    assert report.ok, report.render() + "\n" + c.tails()
    # The case's pictures outlived the replica that took them: every live replica serves
    # every picture the case records, CAM-A's from before the kill included.
    (case,) = c.cases()
    recorded = {**pictures(case, "CAM-A"), **pictures(case, "CAM-B")}
    assert taken.items() <= recorded.items()
    live = sorted(name for name, service in c.replicas.items() if service.running())
    assert len(live) == 2
    for name in live:
        assert served(c, name, recorded) == recorded, name
