"""A gateway replica: one of several processes that share a city through NATS JetStream
and PostgreSQL (``citygw replica``; the ``cluster`` section of gateway.yaml).

Devices keep publishing MQTT, to nats-server's MQTT listener, whose subject mapping puts
each device in one of N ingest partitions (devices/nats_ingest.py). Work is split by leases
with fencing tokens (gateway/cluster_leases.py): leases 0..N-1 are the ingest partitions,
lease N is the incident desk, the next ones the cameras. Every replica heartbeats, and the
live replicas deal the leases round-robin among themselves; a replica that dies loses its
leases at expiry, one paused past its lease finds every write refused when it wakes.

- **A partition's worker** (gateway/replica_partitions.py) holds the rule state of the
  partition's devices only, restored from the shared store when the lease is taken. Each
  batch from the partition's durable consumer goes through the embedded gateway's own
  Pipeline (decode, replay guard, health, rules) and commits readings, dead letters, rule
  state and the alerts it made (into the shared ``alert_log``) in one transaction fenced by
  the partition's lease; the batch is acked to NATS after the commit. A batch that does
  not commit (a stale lease, a database error) is not acked, the worker is rebuilt from the
  store, and the batch comes again; what it committed before is recognised and skipped. A
  message the store refuses for its content becomes a dead letter instead, found by
  committing the batch in halves (gateway/replica_poison.py).
- **The incident desk** is the embedded Gateway itself in its desk role (gateway/service.py
  ``DeskRole``) on the shared store: it takes the alert log in id order through the alert
  flow and the incident book, so every merge — the three bins of one collection point on
  three replicas, a zone seen by two cameras — is decided by one owner, and drains the
  outbox with the existing idempotency keys, syncs statuses and runs closure checks.
  Alerts are rare beside readings (the book takes ~22,000 alerts/s, bench/incidents.py),
  so one desk serves a city; a re-armed alert's rule state goes back to the worker
  holding it through ``rearm_queue``.
- **A camera's worker** (gateway/replica_cameras.py) runs the camera in a video runtime of
  its own; its alerts go to the alert log like a partition's.

Every write of a lease holder runs on a ``FencedConnection`` (gateway/replica_context.py),
which checks the lease inside each transaction, so a stale holder's write rolls back whole.
All of a replica's writes run on its one event loop, between lease ticks. With
``cluster.status`` set, the replica serves a read-only /healthz and /stats; with
``cluster.evidence_server``, the signed evidence links on a listener of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from functools import partial
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from detectors.backends import Detector, load_detector
from detectors.config import CameraSettings
from devices.fleet import MessageRouter
from devices.nats_ingest import IngestMessage, NatsIngest
from devices.registry import load_registry
from gateway import alert_log, cluster_leases, pg_store, store
from gateway.config import GatewayConfig
from gateway.evidence import EvidenceWriter
from gateway.evidence_links import links_from_settings
from gateway.evidence_server import evidence_server
from gateway.pipeline import StoreUnavailable
from gateway.replica_cameras import CameraWorker
from gateway.replica_context import ClusterContext, FencedConnection
from gateway.replica_partitions import PartitionWorker, now_ms
from gateway.replica_poison import ComeAgain, Delivery, StoreRefusesAll
from gateway.replica_status import status_app, status_server
from gateway.rule_settings import settings_from_files
from gateway.service import DeskRole, Gateway

log = logging.getLogger(__name__)


class Replica:
    """One replica process: leases, the workers of its partitions, the desk when it
    holds it (see the module docstring)."""

    def __init__(self, config: GatewayConfig) -> None:
        settings = config.cluster
        if settings is None:
            raise ValueError("a replica needs the config's cluster section")
        registry = load_registry(config.devices.registry)
        self.context = ClusterContext(
            config, settings, registry, settings_from_files(config, registry),
            MessageRouter(config.devices.fleets, limits=config.ingest.limits), settings.owner(),
            tuple(sorted(config.video.cameras, key=lambda camera: camera.id)),
        )  # fmt: skip
        self._password = (
            settings.postgres_password.get_secret_value() if settings.postgres_password else None
        )
        schema_conn = self._connect()
        try:
            pg_store.ensure_schema(schema_conn)
            alert_log.ensure_schema(schema_conn)
        finally:
            schema_conn.close()
        leases = cluster_leases.LeaseTable(self._lease_session(), self.context.lease_count)
        leases.ensure_schema()
        self.keeper = cluster_leases.LeaseKeeper(leases, self.context.owner, settings.lease_ttl_s)
        self.ingest = NatsIngest(settings.nats.model_copy(update={"partitions": ()}), self._batch)
        self.workers: dict[int, PartitionWorker] = {}
        self.reading: dict[int, int] = {}  # partition → the fence its consumer was taken with
        self.desk: Gateway | None = None
        self.cameras: dict[int, CameraWorker] = {}  # camera lease → its worker
        self._detector: Detector | None = None  # loaded with the first camera taken
        if config.evidence.dir is None:
            log.warning(
                "evidence.dir is not set: this replica keeps its pictures and excerpts on its"
                " own disk, where the desk on another replica cannot read them; set it to a"
                " folder every replica mounts"
            )
        self._evidence = EvidenceWriter(
            config.evidence.folder(config.store.path.parent),
            links_from_settings(config.evidence, config.store.path.parent),
            config.evidence.max_picture_bytes,
        )
        self._desk_task: asyncio.Task[None] | None = None
        self._desk_stop = asyncio.Event()
        self._desk_broken = False  # set by the desk's loop: rebuild it at the next tick
        self.counters: Counter[str] = Counter()
        self._last_tick = time.monotonic()

    def _connect(self) -> pg_store.PgConnection:
        """A session whose every wait is a fraction of a lease: its commits run on the loop
        that renews the leases, and an open transaction of a paused process holds the
        lease row's lock, which a takeover waits for."""
        settings = self.context.settings
        third_ms = max(100, int(settings.lease_ttl_s * 1000 / 3))
        return pg_store.connect(
            settings.postgres_dsn, self._password, statement_timeout_ms=third_ms,
            lock_timeout_ms=third_ms, idle_in_transaction_ms=third_ms,
        )  # fmt: skip

    def _lease_session(self) -> psycopg.Connection:
        """The lease table's session: a takeover waits at most a tenth of a lease on a row
        a paused holder locks."""
        settings = self.context.settings
        dsn = settings.postgres_dsn
        if self._password is not None:
            dsn = make_conninfo(dsn, password=self._password)
        tenth_ms = max(50, int(settings.lease_ttl_s * 100))
        return cluster_leases.connect(dsn, lock_timeout_ms=tenth_ms)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick leases and follow them until ``stop``; then hand everything back."""
        settings = self.context.settings
        health_every_s = self.context.config.rules.health.check_every_s
        await self.ingest.start()
        servers = []
        if settings.status is not None:
            stale_s = max(settings.lease_ttl_s, 3 * settings.lease_tick_s)
            app = status_app(self.stats, lambda: self._last_tick, stale_s)
            servers.append(status_server(settings.status, app))
        if settings.evidence_server is not None:
            servers.append(evidence_server(settings.evidence_server, self._evidence))
        serving = [asyncio.create_task(server.serve()) for server in servers]
        log.info("replica %s started", self.context.owner)
        last_health = time.monotonic()
        try:
            while not stop.is_set():
                held = self._tick()
                await self._follow(held)
                if time.monotonic() - last_health >= health_every_s:
                    self._tick_health()
                    last_health = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.lease_tick_s)
        finally:
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*serving)
            for lease in list(self.cameras):
                await self._drop_camera(lease)
            await self._stop_desk()
            await self.ingest.stop()
            with contextlib.suppress(Exception):
                self.keeper.stop()
            for worker in self.workers.values():
                worker.conn.close()
            log.info("replica %s stopped", self.context.owner)

    def _tick(self) -> dict[int, int]:
        """The leases held after a tick. The database away: what was held is kept for a
        lease's time (fencing refuses any write that comes too late), then dropped, so
        no worker goes on as if it held a partition; a lost session is opened again."""
        try:
            held = self.keeper.tick()
        except Exception as exc:
            self.counters["lease_tick_errors"] += 1
            log.warning("lease tick failed: %s", exc)
            table = self.keeper.table
            if table.conn.broken or table.conn.closed:
                with contextlib.suppress(Exception):
                    table.conn = self._lease_session()
                    log.info("lease session opened again")
            if time.monotonic() - self._last_tick > self.context.settings.lease_ttl_s:
                self.keeper.held.clear()
            return dict(self.keeper.held)
        self._last_tick = time.monotonic()
        return held

    async def _follow(self, held: dict[int, int]) -> None:
        """Start and stop reading partitions, the desk and cameras as the leases say. A
        partition whose reading stopped by itself (its consumer gone) is taken again; a
        partition taken gets its worker at once, so its silent devices are watched too."""
        reading = self.ingest.partitions
        moved = [
            p
            for p in range(self.context.partitions)
            if self.reading.get(p) != held.get(p) or (p in self.reading and p not in reading)
        ]
        # Released together: each waits for its read loop to stop (bounded), and the lease
        # loop must not wait for them one after another.
        gone = [p for p in moved if p in self.reading]
        await asyncio.gather(*(self.ingest.release(p) for p in gone))
        for partition in gone:
            del self.reading[partition]
            self._drop_worker(partition)
        for partition in moved:
            fence = held.get(partition)
            if fence is not None:
                self.reading[partition] = fence
                try:
                    self._worker(partition)
                except Exception as exc:  # the store away: made again with the first batch
                    log.warning("partition %d: state not restored yet: %s", partition, exc)
                self.ingest.take(partition, fence)
        if self._desk_broken:
            self._desk_broken = False
            await self._stop_desk()
        fence = held.get(self.context.desk_lease)
        current = self.desk.conn.fence if self.desk is not None else None
        if fence != current:
            await self._stop_desk()
            if fence is not None:
                try:
                    self._start_desk(fence)
                except Exception as exc:  # the store away: tried again at the next tick
                    self.counters["desk_start_failures"] += 1
                    log.warning("the incident desk did not start: %s", exc)
        for lease, camera in self.context.camera_leases().items():
            fence, worker = held.get(lease), self.cameras.get(lease)
            if worker is not None and worker.fence != fence:
                await self._drop_camera(lease)
                worker = None
            if worker is None and fence is not None:
                self._take_camera(lease, camera, fence)

    def _take_camera(self, lease: int, camera: CameraSettings, fence: int) -> None:
        config = self.context.config
        if self._detector is None:
            settings = config.video.detector
            assert settings is not None  # the config requires one with cameras
            self._detector = load_detector(
                settings.model, settings.backend, settings.conf, settings.iou
            )
        conn = FencedConnection(self._connect(), self.context.owner, lease, fence)
        worker = CameraWorker(
            self.context, camera, lease, conn, self._detector, self._evidence,
            asyncio.get_running_loop(), self._camera_failed,
        )  # fmt: skip
        self.cameras[lease] = worker
        worker.start()

    async def _drop_camera(self, lease: int) -> None:
        worker = self.cameras.pop(lease, None)
        if worker is not None:
            await asyncio.to_thread(worker.stop)  # joins the camera's threads

    def _camera_failed(self, worker: CameraWorker) -> None:
        """A refused commit: the worker's state is not the store's; taken afresh at the
        next tick if the lease is still ours."""
        if self.cameras.get(worker.lease) is worker:
            self.counters["camera_commits_refused"] += 1
            asyncio.get_running_loop().create_task(self._drop_camera(worker.lease))

    def _worker(self, partition: int) -> PartitionWorker:
        fence = self.reading.get(partition)
        if fence is None:
            raise cluster_leases.StaleLease(f"partition {partition} is not held")
        worker = self.workers.get(partition)
        if worker is None or worker.fence != fence:
            self._drop_worker(partition)
            conn = FencedConnection(self._connect(), self.context.owner, partition, fence)
            worker = self.workers[partition] = PartitionWorker(self.context, partition, conn)
            log.info("partition %d: devices' state restored (fence %d)", partition, fence)
        return worker

    def _rebuild_worker(self, partition: int) -> None:
        """The partition's worker made afresh from the store on the same session, after a
        commit refused for its content (rolled back, the session sound): the poison search
        rebuilds once a step, and a new session each time would cost a connection each."""
        conn = self.workers.pop(partition).conn
        try:
            conn.rollback()  # the commit's own rollback ended it already; never left open
            self.workers[partition] = PartitionWorker(self.context, partition, conn)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def _drop_worker(self, partition: int) -> None:
        """The worker closed, its state not the store's or its lease gone: a stall it
        showed is for the next delivery to tell again."""
        self.counters.pop(stalled_key(partition), None)
        worker = self.workers.pop(partition, None)
        if worker is not None:
            with contextlib.suppress(Exception):
                worker.conn.close()

    def _batch(self, messages: list[IngestMessage]) -> None:
        """NATS's callback: commit the batch, or raise so that it is not acked. A message
        the store refuses for its content is a dead letter, found by halves within a third
        of a lease (gateway/replica_poison.py); any other failure (a stale lease, the store
        away) makes the batch come again. A worker whose commit failed for another reason
        holds state the store may not: it is rebuilt, on a new session, before the batch
        comes again. A search out of time or stopped by a store refusing everything leaves
        the worker as the store holds it, and keeps it."""
        partition = messages[0].partition
        delivery = Delivery(
            partial(self._worker, partition), partial(self._rebuild_worker, partition),
            messages, self.counters, self.context.settings.lease_ttl_s / 3,
        )  # fmt: skip
        stalled = stalled_key(partition)
        try:
            delivery.commit()
        except Exception as exc:
            self.counters[f"batch_refused_{type(exc).__name__}"] += 1
            if isinstance(exc, StoreRefusesAll):
                self.counters[stalled] += 1  # deliveries in a row: shown until one commits
            elif not isinstance(exc, ComeAgain):
                self._drop_worker(partition)
            raise
        self.counters.pop(stalled, None)
        self.counters["batches"] += 1
        self.counters["messages"] += len(messages)

    def _tick_health(self) -> None:
        """Silent devices' offline alerts, and re-arms for the cameras held."""
        for camera in list(self.cameras.values()):
            try:
                camera.tick()
            except Exception as exc:  # the store away: the camera is taken afresh
                log.warning("camera %s: tick failed: %s", camera.camera_id, exc)
                self._camera_failed(camera)
        for partition in list(self.workers):
            try:
                self.workers[partition].tick_health()
            except Exception as exc:
                self.counters["health_tick_errors"] += 1
                log.warning("partition %d: health tick failed: %s", partition, exc)
                self._drop_worker(partition)

    def _start_desk(self, fence: int) -> None:
        context = self.context
        conn = FencedConnection(self._connect(), context.owner, context.desk_lease, fence)
        role = DeskRole(
            conn, self._intake, partial(alert_log.queue_rearms, route=context.lease_of_key),
            self._desk_may_send,
            lambda: FencedConnection(self._connect(), context.owner, context.desk_lease, fence),
        )  # fmt: skip
        self.desk = Gateway(context.config, desk=role)
        self._desk_stop = asyncio.Event()
        self._desk_task = asyncio.create_task(self.desk.run(self._desk_stop))
        log.info("replica %s holds the incident desk (fence %d)", context.owner, fence)

    async def _stop_desk(self) -> None:
        task, self._desk_task, self.desk = self._desk_task, None, None
        if task is None:
            return
        self._desk_stop.set()
        with contextlib.suppress(Exception):
            await task

    def _desk_may_send(self) -> str | None:
        """None while the leases were renewed less than a lease minus a tick ago (so the
        desk lease is still ours), else why the desk must not send: a process paused past
        its lease wakes with an old renewal, and sends nothing before its next tick."""
        settings = self.context.settings
        age = time.monotonic() - self._last_tick
        if age < settings.lease_ttl_s - settings.lease_tick_s:
            return None
        return f"the desk lease was last renewed {age:.1f} s ago: nothing sent until renewed"

    async def _intake(self, gateway: Gateway) -> None:
        """The desk's loop: the alert log's oldest committed alerts through the incident
        book, deleted in the same commit. Any commit that fails or whose outcome is in
        doubt (a session lost during COMMIT, a stale lease, rows another desk took) leaves
        the desk's memory ahead of the store, so the desk is rebuilt from the store at the
        next tick instead of retrying from memory."""
        settings = self.context.settings
        pipeline = gateway.pipeline
        try:
            while True:
                if pipeline.unsaved:
                    raise StoreUnavailable("a desk commit failed")
                taken = alert_log.peek(gateway.conn, settings.desk_batch)
                if not taken.ids:
                    await asyncio.sleep(settings.desk_poll_s)
                    continue
                deletion = partial(alert_log.delete, ids=taken.ids)
                if pipeline.apply_alerts(taken.alerts, now_ms(), also=[deletion]):
                    gateway.dispatcher.wake()
                self.counters["desk_alerts"] += len(taken.alerts)
                self.counters["desk_unreadable"] += taken.unreadable
                await asyncio.sleep(0)
        except (alert_log.LogTakenElsewhere, cluster_leases.StaleLease, StoreUnavailable,
                *store.DatabaseError) as exc:  # fmt: skip
            self.counters["desk_rebuilt"] += 1
            log.warning("incident desk rebuilt from the store: %s", exc)
            self._desk_broken = True

    def stats(self) -> dict[str, Any]:
        return {
            "replica": self.context.owner,
            "leases": dict(self.keeper.held),
            "ingest": self.ingest.stats(),
            "desk": self.desk.stats() if self.desk is not None else None,
            "cameras": {
                worker.camera_id: worker.runtime.snapshot()["cameras"][worker.camera_id]
                for worker in self.cameras.values()
            },
            **self.counters,
        }


def stalled_key(partition: int) -> str:
    """The /stats counter of a partition whose deliveries the store refuses whole
    (``StoreRefusesAll``): deliveries in a row, gone once one commits or the worker goes."""
    return f"stalled_partition_{partition}"
