"""A city on several machines, end to end: nats-server (devices publish MQTT to it),
PostgreSQL and three replicas, real processes on loopback. The builtin scenario's devices
are spread over the replicas' partitions — the three bins of one collection point over all
three replicas, whose alerts the incident desk merges into one case — and the cases filed
are exactly the truth's, also with replicas killed, paused past their leases and added."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cluster_harness import PARTITIONS, ClusterStack

from devices.nats_ingest import partition_of
from simulators.postgres import PostgresServer
from simulators.truth import compare_cases

TIME_SCALE = 120


@pytest.fixture(scope="module")
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def cluster(tmp_path, postgres, request):
    stacks: list[ClusterStack] = []

    def make(**kwargs) -> ClusterStack:
        name = f"t{len(stacks)}_{abs(hash(request.node.name)) % 10**8}"
        workdir = tmp_path / f"cluster{len(stacks)}"  # beside an embedded stack's files
        workdir.mkdir()
        stack = ClusterStack(workdir, postgres.create_database(name), **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def assert_exact_cases(c: ClusterStack) -> None:
    report = compare_cases(c.truth(), c.cases())
    assert report.ok, report.render() + "\n" + c.tails()


def test_builtin_scenario_over_three_replicas_files_exactly_the_truth(cluster):
    c = cluster()
    c.start(replicas=3)
    for name, port in c.status_ports.items():  # what a container's healthcheck asks
        url = f"http://127.0.0.1:{port}/healthz"
        c.wait_until(lambda url=url: httpx.get(url).json()["ok"] is True, f"{name}'s /healthz", 30)
    holders = c.holders()
    bins = ("BIN-010", "BIN-011", "BIN-012")  # one collection point: one case
    assert len({holders[partition_of(device, PARTITIONS)] for device in bins}) == 3
    sim = c.simulator(TIME_SCALE)
    assert sim.proc.wait(120) == 0, sim.tail()
    c.wait_caught_up(120)
    assert_exact_cases(c)
    assert c.rejections() == c.truth()["expected_rejections"]
    assert_every_good_reading_stored_once(c)
    assert c.replays() == {"create": 0, "evidence": 0}  # no command sent twice


def assert_every_good_reading_stored_once(c: ClusterStack) -> None:
    truth = c.truth()
    good = truth["published"] - sum(truth["expected_rejections"].values())
    assert (c.readings(), c.duplicate_readings()) == (good, 0)


def run(c: ClusterStack, during=None) -> None:
    sim = c.simulator(TIME_SCALE)
    if during is not None:
        during()
    assert sim.proc.wait(180) == 0, sim.tail()
    c.wait_caught_up(180)


def test_one_replica_killed_and_another_paused_past_its_lease(cluster):
    """r1 SIGKILLed, then r2 SIGSTOPped until r3 holds every lease, then resumed: r2 finds
    its partitions taken (its consumers deleted, any write it had open refused by the
    fence) and gets its share back; then every database session is cut, as a PostgreSQL
    restart would, and a partition's consumer deleted under its holder: the replicas open
    new sessions and read the partition again. Nothing lost, nothing doubled."""
    c = cluster()
    c.start(replicas=3)

    def kill_and_pause() -> None:
        c.wait_until(lambda: c.alerts_logged() >= 2, "the first alerts judged", 60)
        c.replicas["r1"].kill()
        c.replicas["r2"].pause()
        c.wait_until(lambda: set(c.holders().values()) == {"r3"}, "r3 holding every lease", 60)
        c.replicas["r2"].resume()
        assert c.cut_database_sessions() > 0
        c.wait_until(lambda: c.delete_consumer(0) is not None, "partition 0's consumer", 30)

    run(c, during=kill_and_pause)
    assert_exact_cases(c)
    assert_every_good_reading_stored_once(c)
    c.wait_balanced()  # r2 is live again and holds its share; r1 stays dead


def test_a_replica_added_mid_run_takes_its_share(cluster):
    c = cluster()
    c.start(replicas=2)

    def add() -> None:
        c.wait_until(lambda: c.alerts_logged() >= 2, "the first alerts judged", 60)
        c.add_replica()
        c.wait_balanced()

    run(c, during=add)
    assert_exact_cases(c)
    assert_every_good_reading_stored_once(c)
    assert c.replays() == {"create": 0, "evidence": 0}  # the rebalance sent nothing twice


HEALTH = Path(__file__).resolve().parents[1] / "simulators" / "scenarios" / "health"
# Each staged failure lasts minutes of the scenario's compressed time: filed at once.
FAST_HEALTH = {"rules": {"health": {"check_every_s": 0.5, "confirm_s": 0}}}


def test_the_health_scenario_over_three_replicas_files_exactly_the_truth(cluster):
    """Silence (a modem that dies), a battery running down and a lying gauge beside a real
    flood, judged by the replicas holding those devices: exactly the truth's cases — the
    same truth tests/test_e2e_device_health.py holds one embedded process on SQLite to, so
    both deployments file the same cases through one rules and incidents code path."""
    c = cluster(scenario=HEALTH / "scenario.yaml", config=FAST_HEALTH)
    c.start(replicas=3)
    sim = c.simulator()
    assert sim.proc.wait(90) == 0, sim.tail()
    c.wait_caught_up(60)
    assert_exact_cases(c)
    assert_every_good_reading_stored_once(c)
    (suspect,) = c.query("SELECT count(*) FROM readings WHERE suspect = 1")[0]
    assert suspect == 30 + 2  # WL-101's 800 cm readings, and two more until believed again
