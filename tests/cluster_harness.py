"""Real processes for the cluster's end-to-end tests: nats-server (JetStream + MQTT),
PostgreSQL, the bundled case platform, replicas (`citygw replica`) and the device
simulator publishing MQTT to nats-server, each on loopback as an operator would start it.

Readiness is observed, never slept for: the platform's /healthz, and every lease held by a
live replica (only then do the ingest stream and the partitions' consumers exist, and
nats-server acks a device's QoS 1 message on receipt, stored or not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import nats
import psycopg
import yaml

from simulators.mosquitto import free_port
from simulators.nats import NatsServer

from harness import TOKEN, Service, start_simulator, wait_until

# 7: the builtin's three collection-point bins land in partitions 0, 5 and 4, which three
# replicas hold (round-robin), so their one case is merged from three replicas' alerts.
PARTITIONS = 7
LEASE_TTL_S = 4.0
LEASE_TICK_S = 0.5


class ClusterStack:
    """nats-server, PostgreSQL (one database of a shared server), the platform and N
    replicas in one temp folder."""

    def __init__(
        self, workdir: Path, dsn: str, scenario: Path | None = None, config: dict | None = None
    ) -> None:
        """``config``: top-level gateway config sections to set or replace."""
        from simulators.scenario import BUILTIN_SCENARIO

        self.workdir = workdir
        self.extra = config or {}
        self.dsn = dsn
        self.scenario = scenario or BUILTIN_SCENARIO
        self.nats = NatsServer(workdir, partitions=PARTITIONS)
        self.platform_port = free_port()
        self.platform = Service(
            "platform",
            ["platform", "--port", str(self.platform_port), "--db",
             str(workdir / "platform.db"), "--token", TOKEN],
            workdir,
        )  # fmt: skip
        self.platform_http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.platform_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        self.replicas: dict[str, Service] = {}
        self.status_ports: dict[str, int] = {}  # each replica's read-only /stats
        self.evidence_ports: dict[str, int] = {}  # each replica's signed evidence links
        self.truth_path = workdir / "truth.json"

    def start(self, replicas: int = 3) -> None:
        self.nats.start()
        self.platform.start()
        healthz = f"http://127.0.0.1:{self.platform_port}/healthz"
        wait_until(lambda: httpx.get(healthz).is_success, "the platform", 60, self.platform)
        for _ in range(replicas):
            self.add_replica()
        self.wait_balanced()

    def add_replica(self) -> Service:
        """Starts one more replica (its id: r1, r2, ...)."""
        name = f"r{len(self.replicas) + 1}"
        self.status_ports[name] = free_port()
        self.evidence_ports[name] = free_port()
        service = Service(name, ["replica", "-c", str(self._config(name))], self.workdir)
        service.start()
        self.replicas[name] = service
        return service

    def _config(self, name: str) -> Path:
        from simulators.scenario import load_scenario

        registry = self.scenario.parent / load_scenario(self.scenario).spec.registry
        folder = self.workdir / name
        folder.mkdir(exist_ok=True)
        config = {
            "gateway_id": "cluster-test",
            # Devices reach the replicas through nats-server's MQTT listener, not this.
            "mqtt": {"url": self.nats.mqtt_url, "client_id": f"unused-{name}"},
            "devices": {"registry": str(registry)},
            "store": {"path": str(folder / "local.db")},
            "case_platform": {
                "url": f"http://127.0.0.1:{self.platform_port}",
                "token": TOKEN,
                "status_sync_s": 1,
                "retry": {"initial_s": 0.2, "max_s": 2},
            },
            "api": {"enabled": False},
            # One folder for every replica, as deploy/replica.yaml's shared volume.
            "evidence": {"dir": str(self.workdir / "evidence")},
            "cluster": {
                "postgres_dsn": self.dsn,
                "replica_id": name,
                "lease_ttl_s": LEASE_TTL_S,
                "lease_tick_s": LEASE_TICK_S,
                "nats": {"url": self.nats.url, "partition_count": PARTITIONS},
                "status": {"port": self.status_ports[name]},
                "evidence_server": {"port": self.evidence_ports[name]},
            },
        }
        config.update(self.extra)
        path = folder / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
        return path

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def holders(self) -> dict[int, str | None]:
        """lease → the replica holding it now (None: free or expired); empty before the
        first replica made the table."""
        if not self.query("SELECT to_regclass('partition_leases')")[0][0]:
            return {}
        rows = self.query(
            "SELECT partition, CASE WHEN expires_at > clock_timestamp() THEN owner END"
            " FROM partition_leases ORDER BY partition"
        )
        return dict(rows)

    def wait_balanced(self, timeout_s: float = 60) -> None:
        """Until every lease is held by a running replica, each holding its round-robin
        share (so a test's events meet the spread it means to test)."""
        live = sorted(name for name, service in self.replicas.items() if service.running())

        def balanced() -> bool:
            holders = self.holders()
            if not holders or any(h not in live for h in holders.values()):
                return False
            return all(holders[p] == live[p % len(live)] for p in holders)

        self.wait_until(balanced, f"leases dealt over {live}", timeout_s)

    def wait_until(self, check: Callable[[], bool], what: str, timeout_s: float) -> None:
        """``harness.wait_until``, failing with the leases and every replica's log."""
        try:
            wait_until(check, what, timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nleases: {self.holders()}\n{self.tails()}") from None

    def simulator(self, time_scale: float | None = None) -> Service:
        """The scenario's device fleet, at its own time scale by default."""
        return start_simulator(
            self.nats.mqtt_url, self.truth_path, self.scenario, self.workdir, time_scale
        )

    def evidence(self, name: str, link: str) -> httpx.Response:
        """A case's evidence link (a path with its signature) fetched from a running
        replica's evidence server, as a platform would."""
        return httpx.get(f"http://127.0.0.1:{self.evidence_ports[name]}{link}", timeout=5)

    def stats(self, name: str) -> dict:
        """A running replica's /stats."""
        url = f"http://127.0.0.1:{self.status_ports[name]}/stats"
        return httpx.get(url, timeout=5).json()

    def live_stats(self) -> dict[str, dict]:
        """Every running replica's /stats that answers now."""
        found = {}
        for name, service in self.replicas.items():
            if service.running():
                with contextlib.suppress(httpx.HTTPError):
                    found[name] = self.stats(name)
        return found

    def truth(self) -> dict:
        return json.loads(self.truth_path.read_text(encoding="utf-8"))

    def cases(self) -> list[dict]:
        return self.platform_http.get("/api/v1/cases").json()["cases"]

    def cut_database_sessions(self) -> int:
        """Ends every other session of the cluster's database, as a PostgreSQL restart or
        failover would; returns how many."""
        return len(
            self.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )

    def delete_consumer(self, partition: int) -> str | None:
        """Deletes the durable consumer reading ``partition`` (as an operator's mistake or
        a broker's lost state would); returns its name, None while none reads it (one is
        being made again after a takeover)."""

        async def delete() -> str | None:
            nc = await nats.connect(self.nats.url)
            try:
                js = nc.jetstream()
                for info in await js.consumers_info("CITYGW_INGEST"):
                    if info.config.filter_subject == f"ingest.{partition}.>":
                        await js.delete_consumer("CITYGW_INGEST", info.name)
                        return info.name
                return None
            finally:
                await nc.close()

        return asyncio.run(delete())

    def replays(self) -> dict[str, int]:
        """Commands the platform got a second time (an idempotency key used again)."""
        return self.platform_http.get("/api/v1/replays").json()

    def readings(self) -> int:
        return self.query("SELECT count(*) FROM readings")[0][0]

    def duplicate_readings(self) -> int:
        """Readings stored more than once (same device, time and sequence number)."""
        return self.query(
            "SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY device_id, ts, seq"
            " HAVING count(*) > 1) AS twice"
        )[0][0]

    def alerts_logged(self) -> int:
        """Alerts the desk has judged (stored in the alerts table)."""
        return self.query("SELECT count(*) FROM alerts")[0][0]

    def rejections(self) -> dict[str, int]:
        return dict(self.query("SELECT reason, n FROM rejection_totals"))

    def wait_caught_up(self, timeout_s: float) -> None:
        """Until every good reading is stored, the alert log taken and the outbox drained."""
        truth = self.truth()
        good = truth["published"] - sum(truth["expected_rejections"].values())

        def done() -> bool:
            (left,) = self.query("SELECT count(*) FROM alert_log")[0]
            (pending,) = self.query("SELECT count(*) FROM outbox WHERE state = 'pending'")[0]
            return self.readings() >= good and left == 0 and pending == 0

        self.wait_until(done, f"{good} readings stored, alert log and outbox drained", timeout_s)

    def tails(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{service.tail(30)}" for name, service in self.replicas.items()
        )

    def stop(self) -> None:
        for service in self.replicas.values():  # all told at once, then each waited for
            if service.running():
                service.proc.send_signal(signal.SIGCONT)
                service.proc.terminate()
        for service in self.replicas.values():
            service.stop()
        self.platform.stop()
        self.nats.stop()
