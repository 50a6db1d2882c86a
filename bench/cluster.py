"""Cluster benchmark: readings/s end to end with 1, 2 and 3 replicas, and failover time.

Real processes on loopback, as docker-compose.cluster.yml runs them: nats-server (JetStream
with its MQTT listener and the partition mapping, simulators/nats.py), PostgreSQL with its
own durability settings (every commit flushed: simulators/postgres.py ``durable=True``),
the bundled case platform and N ``citygw replica`` processes on one database.

- **Throughput**, per N in 1, 2, 3 (a fresh nats-server and database each): the replicas
  start and deal the leases; then one paho client publishes R readings of D devices over
  MQTT QoS 1 (every PUBACK awaited; bench/ingest.py's mix, 5 % of them hot, so rules fire
  and the desk files cases) to nats-server's MQTT listener, and the clock runs from the
  first publish until PostgreSQL holds every reading committed (readings + dead letters,
  polled). Then the drain: R more readings published while every replica is paused
  (SIGSTOP, under a 60 s lease that outlasts the pause), timed from SIGCONT to the last
  commit, so no publisher shares the cores. Per-replica efficiency = rate(N) / (N ·
  rate(1)) for both. Every process shares this machine's cores: publisher, nats-server,
  PostgreSQL and the replicas alike.
- **Failover**, over K kills: three replicas while a steady fleet publishes; a replica
  holding partitions is SIGKILLed; timed from the kill until every lease (the partitions
  and the desk) is held again by a live replica, and until the first reading of a partition
  the dead one held is committed after the kill. A fresh replica then replaces it, and the
  leases are dealt again before the next kill. The lease TTL and tick are those given.

Usage: python bench/cluster.py [--readings 30000] [--devices 1000] [--kills 10]
       [--lease-ttl 6] [--lease-tick 1] [--no-write]
Prints the figures and writes them into BENCHMARKS.md (section "Cluster").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from benchmarks_doc import write_report  # noqa: E402
from ingest import payloads, publish_all, write_registry  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from devices.nats_ingest import NatsIngestSettings, partition_of  # noqa: E402
from simulators.mosquitto import free_port  # noqa: E402
from simulators.nats import NatsServer  # noqa: E402
from simulators.postgres import PostgresServer  # noqa: E402

SECTION = "## Cluster: replicas and failover (bench/cluster.py)"
PARTITIONS = 8
STREAM = NatsIngestSettings().stream
# The throughput passes pause replicas while a backlog is published: a lease outlasting it.
THROUGHPUT_LEASE_TTL_S = 60.0
TOKEN = "bench"
CLI = [sys.executable, "-m", "gateway.cli"]
# Normal values per kind: the failover fleet keeps devices alive without firing rules.
CALM = {"bin": {"fill_pct": 40.0}, "manhole_cover": {"tilt_deg": 1.0, "lid_open": False},
        "water_level": {"level_cm": 5.0}}  # fmt: skip


class Cluster:
    """nats-server, one database of the shared PostgreSQL, and replicas, in ``work``."""

    def __init__(
        self, work: Path, pg: PostgresServer, platform_port: int, args, lease_ttl: float
    ) -> None:
        work.mkdir()
        self.work, self.args, self.platform_port = work, args, platform_port
        self.lease_ttl = lease_ttl
        self.dsn = pg.create_database(work.name)
        self.nats = NatsServer(work, partitions=PARTITIONS)
        self.nats.start()
        self.replicas: dict[str, subprocess.Popen] = {}
        self.stopped_on_term: list[bool] = []  # per replica running at stop: did SIGTERM end it

    def add_replica(self, name: str) -> None:
        config = {
            "gateway_id": "bench-cluster",
            "mqtt": {"url": self.nats.mqtt_url},  # a replica opens no MQTT session
            "devices": {"registry": str(self.work.parent / "devices.csv")},
            "store": {"path": str(self.work / f"{name}.db")},
            "case_platform": {"url": f"http://127.0.0.1:{self.platform_port}", "token": TOKEN},
            "api": {"enabled": False},
            "cluster": {
                "postgres_dsn": self.dsn,
                "replica_id": name,
                "lease_ttl_s": self.lease_ttl,
                "lease_tick_s": self.args.lease_tick,
                "nats": {"url": self.nats.url, "partition_count": PARTITIONS},
            },
        }
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        with (self.work / f"{name}.log").open("ab") as log:
            self.replicas[name] = subprocess.Popen(
                [*CLI, "replica", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT
            )

    def live(self) -> list[str]:
        return sorted(name for name, proc in self.replicas.items() if proc.poll() is None)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def holders(self) -> dict[int, str | None]:
        """lease → its live holder now (None: free or expired)."""
        if not self.query("SELECT to_regclass('partition_leases')")[0][0]:
            return {}
        return dict(
            self.query(
                "SELECT partition, CASE WHEN expires_at > clock_timestamp() THEN owner END"
                " FROM partition_leases ORDER BY partition"
            )
        )

    def owned_by_live(self) -> bool:
        holders, live = self.holders(), self.live()
        return len(holders) == PARTITIONS + 1 and all(h in live for h in holders.values())

    def balanced(self) -> bool:
        """Every lease held by a live replica, each its round-robin share."""
        live = self.live()
        holders = self.holders()
        return self.owned_by_live() and all(holders[p] == live[p % len(live)] for p in holders)

    def committed(self) -> int:
        """Readings stored and readings refused (dead letters), committed."""
        return self.query(
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM dead_letters)"
        )[0][0]

    def wait(self, check: Callable[[], bool], what: str, timeout_s: float = 120) -> float:
        """Polls ``check`` until true; returns the monotonic time it first was."""
        deadline = time.monotonic() + timeout_s
        while not check():
            dead = [n for n, proc in self.replicas.items() if proc.returncode not in (None, -9)]
            if time.monotonic() > deadline or dead:
                raise RuntimeError(
                    f"{what}: not within {timeout_s} s (exited: {dead}; leases"
                    f" {self.holders()})\n{self.tails()}"
                )
            time.sleep(0.02)
        return time.monotonic()

    def stop(self) -> None:
        """SIGTERM to every replica; one still running 30 s later is killed and named."""
        for proc in self.replicas.values():
            if proc.poll() is None:
                proc.terminate()
        for name, proc in self.replicas.items():
            if proc.returncode == -9:  # a victim of the failover runs
                continue
            try:
                proc.wait(30)
                self.stopped_on_term.append(True)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                self.stopped_on_term.append(False)
                print(f"replica {name} did not stop within 30 s of SIGTERM: killed", flush=True)
        self.nats.stop()

    def tails(self, lines: int = 15) -> str:
        """The end of every replica's log, for an error."""
        return "\n".join(
            f"--- {name} ---\n"
            + "\n".join(
                (self.work / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            )
            for name in self.replicas
        )


def throughput(cluster: Cluster, replicas: int, fleet: list[tuple[str, str]], readings: int):
    """(end to end readings/s, drain readings/s, publisher's msg/s, readings stored,
    readings stored twice).

    End to end: from the first publish to the last commit, the publisher running beside
    the replicas. Drain: the same number again, published while every replica is paused
    (SIGSTOP; the lease outlasts the pause), then timed from SIGCONT to the last commit:
    what the replicas take with no publisher on the cores."""
    for i in range(replicas):
        cluster.add_replica(f"r{i + 1}")
    cluster.wait(cluster.balanced, f"leases dealt over {replicas} replicas")
    messages = payloads(fleet, 2 * readings)  # the second half: later readings, higher seq
    started = time.monotonic()
    publish_rate = publish_all(cluster.nats.mqtt_port, messages[:readings])
    ended = cluster.wait(lambda: cluster.committed() >= readings, f"{readings} committed", 600)
    end_to_end = readings / (ended - started)

    procs = list(cluster.replicas.values())
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        # A pull request still open would take messages to a paused replica, and they would
        # come again only after the consumer's ack wait: let every open one expire first.
        cluster.wait(lambda: asyncio.run(stream_state(cluster.nats.url))[1] == 0, "pulls expired")
        publish_all(cluster.nats.mqtt_port, messages[readings:])
        cluster.wait(lambda: asyncio.run(stream_state(cluster.nats.url))[0] == readings, "stored")
    finally:
        resumed = time.monotonic()
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
    total = 2 * readings
    ended = cluster.wait(lambda: cluster.committed() >= total, f"{total} committed", 600)
    (twice,) = cluster.query(
        "SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY device_id, ts, seq"
        " HAVING count(*) > 1) AS twice"
    )[0]
    stored = cluster.query("SELECT count(*) FROM readings")[0][0]
    return end_to_end, readings / (ended - resumed), publish_rate, stored, twice


async def stream_state(url: str) -> tuple[int, int]:
    """(messages in the ingest stream, pull requests open on its consumers)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        consumers = await js.consumers_info(STREAM)
        return info.state.messages, sum(c.num_waiting or 0 for c in consumers)
    finally:
        await nc.close()


class SteadyFleet(threading.Thread):
    """Every device publishes calm readings in turn, ``rate`` per second in all, QoS 1."""

    def __init__(self, port: int, fleet: list[tuple[str, str]], rate: float) -> None:
        super().__init__(daemon=True)
        self.fleet, self.interval = fleet, 1.0 / rate
        self.stopping = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-steady-fleet")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            seq += 1
            for device_id, kind in self.fleet:
                doc = {"ts": int(time.time() * 1000), "seq": seq, "values": CALM[kind]}
                self.client.publish(f"citygw/v1/{device_id}/telemetry", json.dumps(doc), qos=1)
                next_at += self.interval
                if (pause := next_at - time.monotonic()) > 0:  # pacing, not waiting
                    time.sleep(pause)
                if self.stopping.is_set():
                    break

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def failover(cluster: Cluster, fleet: list[tuple[str, str]], kills: int, rate: float):
    """Per kill: (seconds to every lease owned by live replicas, seconds to the first
    reading of a moved partition committed, partitions moved, desk moved), or None where
    the cluster did not recover (then every replica is killed and three fresh ones start)."""
    fresh = 0

    def start_three() -> None:
        nonlocal fresh
        fresh += 1
        for i in range(3):
            cluster.add_replica(f"s{fresh}r{i + 1}")

    start_three()
    cluster.wait(cluster.balanced, "leases dealt over 3 replicas")
    steady = SteadyFleet(cluster.nats.mqtt_port, fleet, rate)
    steady.start()
    results: list[tuple | None] = []
    try:
        for k in range(kills):
            try:
                cluster.wait(cluster.balanced, "leases dealt again", 10 * cluster.lease_ttl)
                results.append(one_kill(cluster, fleet, cluster.live()[k % 3]))
            except RuntimeError as exc:
                print(f"kill {k}: the cluster did not recover: {str(exc)[:300]}", flush=True)
                results.append(None)
                for proc in cluster.replicas.values():
                    if proc.poll() is None:
                        proc.kill()
                start_three()
    finally:
        steady.stop()
    return results


def one_kill(cluster: Cluster, fleet: list[tuple[str, str]], victim: str) -> tuple:
    """SIGKILL ``victim``, time the takeover, start a replacement (see ``failover``)."""
    held = [p for p, owner in cluster.holders().items() if owner == victim]
    moved = [p for p in held if p < PARTITIONS]
    devices = [d for d, _ in fleet if partition_of(d, PARTITIONS) in moved]
    cluster.replicas[victim].kill()
    killed = time.monotonic()
    cluster.replicas[victim].wait(10)
    (last,) = cluster.query("SELECT coalesce(max(rowid), 0) FROM readings")[0]
    owned_at = first_at = None
    deadline = killed + 5 * cluster.lease_ttl + 30
    while owned_at is None or first_at is None:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"leases {cluster.holders()}")
        if owned_at is None and cluster.owned_by_live():
            owned_at = now
        if (
            first_at is None
            and cluster.query(
                "SELECT EXISTS (SELECT 1 FROM readings WHERE rowid > %s AND device_id = ANY(%s))",
                (last, devices),
            )[0][0]
        ):
            first_at = now
        time.sleep(0.02)
    cluster.add_replica(f"{victim}x")
    return owned_at - killed, first_at - killed, len(moved), PARTITIONS in held


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with 10 samples, p99 is the largest."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=30_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steady-rate", type=float, default=500.0, help="readings/s, failover")
    parser.add_argument("--lease-ttl", type=float, default=6.0)
    parser.add_argument("--lease-tick", type=float, default=1.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--workdir", help="keep the logs and configs here (an empty folder)")
    parser.add_argument("--skip-throughput", action="store_true", help="failover only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, PostgresServer(durable=True) as pg:
        work = Path(args.workdir or tmp)
        fleet = write_registry(work / "devices.csv", args.devices)
        platform_port = free_port()
        platform = subprocess.Popen(
            [*CLI, "platform", "--port", str(platform_port), "--db", str(work / "platform.db"),
             "--token", TOKEN],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        rates: dict[int, tuple] = {}
        stopped: list[bool] = []
        try:
            for n in () if args.skip_throughput else (1, 2, 3):
                cluster = Cluster(
                    work / f"pass{n}", pg, platform_port, args, THROUGHPUT_LEASE_TTL_S
                )
                try:
                    rates[n] = throughput(cluster, n, fleet, args.readings)
                finally:
                    cluster.stop()
                    stopped += cluster.stopped_on_term
                print(f"{n} replica(s): {rates[n][:2]} readings/s", flush=True)
            cluster = Cluster(work / "failover", pg, platform_port, args, args.lease_ttl)
            try:
                kills = failover(cluster, fleet, args.kills, args.steady_rate)
            finally:
                cluster.stop()
                stopped += cluster.stopped_on_term
        finally:
            platform.terminate()
            platform.wait(10)

    lines = [
        f"readings={args.readings} per measure, devices={args.devices}, partitions={PARTITIONS}"
        f" (MQTT QoS 1 -> nats-server -> replicas -> PostgreSQL commit, fsync on)",
    ]
    lines.append(
        "  replicas   end to end (efficiency)   drain, publisher paused (efficiency)"
        "   publisher msg/s   stored / twice"
    )
    for n, (e2e, drain, published, stored, twice) in rates.items():
        lines.append(
            f"  {n:8d}   {e2e:10,.0f}/s ({e2e / (n * rates[1][0]):4.2f})"
            f"   {drain:22,.0f}/s ({drain / (n * rates[1][1]):4.2f})"
            f"   {published:15,.0f}   {stored} / {twice}"
        )
    recovered = [k for k in kills if k is not None]
    owned = [k[0] for k in recovered] or [math.nan]
    first = [k[1] for k in recovered] or [math.nan]
    lines += [
        f"failover: {len(kills)} SIGKILLs, {len(recovered)} recovered;"
        f" {len(kills) - len(recovered)} not within 5 TTL + 30 s (then every replica was"
        f" replaced), lease TTL {args.lease_ttl:g} s, tick {args.lease_tick:g} s, steady fleet"
        f" {args.steady_rate:g} readings/s:",
        f"  every lease owned again      p50 {statistics.median(owned):5.2f} s"
        f"  p99 {percentile(owned, 0.99):5.2f} s  (min {min(owned):.2f}, max {max(owned):.2f})",
        f"  first moved reading stored   p50 {statistics.median(first):5.2f} s"
        f"  p99 {percentile(first, 0.99):5.2f} s  (min {min(first):.2f}, max {max(first):.2f})",
        "  per kill (owned s, first s, partitions moved, desk moved): "
        + ", ".join(
            "(stalled)"
            if k is None
            else f"({k[0]:.2f}, {k[1]:.2f}, {k[2]}, {'desk' if k[3] else '-'})"
            for k in kills
        ),
    ]
    lines.append(
        f"replicas ended by SIGTERM within 30 s at the end of a pass: {sum(stopped)} of"
        f" {len(stopped)} (the others were killed)"
    )
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        about = (
            "every process on this machine's cores (publisher, nats-server, PostgreSQL with"
            " fsync on, the platform and the replicas): on 2 cores three replicas share the"
            " same two cores, so efficiency below 1 measures the machine, not the design."
            " End to end is bounded by the one paho publisher beside them (compare its"
            " msg/s); the drain, with the publisher done, is the replicas' own rate. Failover"
            " is bounded below by the lease TTL: a dead replica's leases are taken when they"
            " expire. Compare within one run."
        )
        write_report(SECTION, about, report)


if __name__ == "__main__":
    main()
