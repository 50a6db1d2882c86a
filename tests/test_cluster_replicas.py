"""A city on several machines, end to end: nats-server (devices publish MQTT to it),
PostgreSQL and three replicas, real processes on loopback. The builtin scenario's devices
are spread over the replicas' partitions, and the cases filed are exactly the truth's."""

from __future__ import annotations

import pytest
from cluster_harness import ClusterStack
from postgres_server import PostgresServer

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
        stack = ClusterStack(tmp_path, postgres.create_database(name), **kwargs)
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
    sim = c.simulator(TIME_SCALE)
    assert sim.proc.wait(120) == 0, sim.tail()
    c.wait_caught_up(120)
    assert_exact_cases(c)
    truth = c.truth()
    assert c.rejections() == truth["expected_rejections"]
    good = truth["published"] - sum(truth["expected_rejections"].values())
    assert c.readings() == good
