"""Telemetry ingest from NATS JetStream, one durable pull consumer per partition.

Devices publish MQTT to nats-server's MQTT listener; a subject mapping puts each device in
one of N partitions (``ingest.<p>.citygw.v1.<device>.telemetry``, simulators/nats.py), and
a work-queue stream over ``ingest.>`` keeps every message until a consumer acks it. A
replica reads the partitions whose lease it holds: for each, one consumer filtered on
``ingest.<p>.>``, one fetch loop, and a batch handed to ``on_batch`` is acked only after
``on_batch`` returned (the gateway's store committed it). A callback that raises, a crash
or a lost connection leaves the batch unacked, and it comes again.

Why a work-queue stream: the broker refuses a second consumer on the same partition
("filtered consumer not unique"), so two replicas can never read one partition at once,
and a consumer created later starts exactly at the oldest unacked message: taking a
partition resumes after the last acked message with no bookkeeping of ours.

Per-partition order (each device's readings in order, so dwell, hysteresis and replay
guards stay correct) holds because:
- one consumer per partition, read by one loop that acks a batch before it fetches again,
  and ``max_ack_pending`` = the batch size, so the server never has more than that batch
  out;
- whenever delivery may have a gap (the callback raised, an ack failed, the connection
  dropped with messages in flight), the loop deletes and recreates its consumer instead
  of fetching on: a message lost in transit would otherwise come back only after
  ``ack_wait``, behind later ones. The new consumer starts at the oldest unacked message.
- the consumer's name carries the lease's fencing token, and taking a partition deletes
  every other consumer on it: a replica paused past its lease then finds its consumer gone
  and drops the partition (counted as ``lost``); it never recreates it, and never fetches
  from the new holder's consumer.

Bounds: a batch is at most ``batch_size`` messages of at most ``max_message_bytes`` each
(the stream's ``max_msg_size``; the router's ``ingest.limits`` then refuses what is over
its own limit with a dead letter, as on the MQTT path); a fetch waits ``fetch_wait_s``;
connection attempts come every ``reconnect_wait_s`` and a partition's retries back off
exponentially up to ``backoff_max_s``. The stream itself is bounded in bytes and age and
discards the oldest when full: a message over a bound is dropped by the server, and with
MQTT QoS 1 the device has its PUBACK anyway (nats-server 2.9 acks on receipt, not on
storage), so the stream's bounds must be far above what an outage can pile up.

Credentials are separate settings, never in the URL, so the URL can be logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlparse

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from domain.retry import Backoff

log = logging.getLogger(__name__)

# JetStream names and the subject prefix: no dots, wildcards or spaces; short enough to
# read in `nats` listings.
_NAME = r"^[A-Za-z0-9_-]{1,32}$"
# The most a batch may hold in memory, all messages at their largest.
MAX_BATCH_BYTES = 256 * 1024 * 1024


class NatsIngestSettings(BaseModel):
    """Config for ingest from NATS JetStream (see the module docstring)."""

    # An error never quotes the input: it may hold the password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # nats:// or tls://host:port; credentials go in user/password, never here.
    url: str = "nats://127.0.0.1:4222"
    user: str | None = Field(None, min_length=1, max_length=256)
    password: SecretStr | None = None
    # The stream over ``<subject_prefix>.>``, created if missing.
    stream: str = Field("CITYGW_INGEST", pattern=_NAME)
    # The first token of the mapping's destination subjects: ``ingest.<p>.<device subject>``.
    subject_prefix: str = Field("ingest", pattern=_NAME)
    # N of the server's ``{{partition(N,1)}}`` mapping: partitions are 0..N-1.
    partition_count: int = Field(8, ge=1, le=1024)
    # Partitions this process reads from the start (without leases: a single replica).
    partitions: tuple[int, ...] = ()
    # Consumers are named ``<consumer_prefix>_p<partition>_f<fence>``.
    consumer_prefix: str = Field("citygw", pattern=_NAME)
    batch_size: int = Field(256, ge=1, le=10_000)
    # How long one pull waits for messages before it asks again.
    fetch_wait_s: float = Field(1.0, ge=0.05, le=30.0)
    # A message delivered but not acked within this is sent again. The read loop does not
    # wait for it (a callback that raises recreates the consumer at once); keep it well
    # above the longest a callback holds a batch: a replica's poison search gives up after
    # a third of a lease and the commit under way (gateway/replica_poison.py).
    ack_wait_s: float = Field(30.0, ge=1.0, le=3_600.0)
    # How long the final, confirmed ack of a batch may take.
    ack_timeout_s: float = Field(5.0, ge=0.1, le=60.0)
    # Larger messages are not stored by the stream (1 MiB: nats-server's max_payload).
    max_message_bytes: int = Field(1024 * 1024, ge=1_024, le=8 * 1024 * 1024)
    stream_max_bytes: int = Field(1024**3, ge=1024 * 1024, le=1024**4)
    stream_max_age_s: float = Field(7 * 86_400.0, ge=60.0, le=365 * 86_400.0)
    stream_replicas: int = Field(1, ge=1, le=5)
    connect_timeout_s: float = Field(5.0, ge=0.1, le=60.0)
    # Between attempts to connect or reconnect to the server.
    reconnect_wait_s: float = Field(2.0, ge=0.1, le=60.0)
    # A partition whose batch failed, or whose consumer could not be made, waits this
    # backoff before it starts over.
    backoff_initial_s: float = Field(0.2, ge=0.01, le=10.0)
    backoff_max_s: float = Field(10.0, ge=0.01, le=300.0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("nats", "tls") or not parsed.hostname:
            raise ValueError("url must be nats://host[:port] or tls://host[:port]")
        if parsed.username or parsed.password:
            raise ValueError("give credentials as user and password, not in the url")
        if self.password is not None and self.user is None:
            raise ValueError("a password needs a user")
        for partition in self.partitions:
            check_partition(partition, self.partition_count)
        if len(set(self.partitions)) != len(self.partitions):
            raise ValueError("partitions are listed twice")
        if self.batch_size * self.max_message_bytes > MAX_BATCH_BYTES:
            raise ValueError(
                f"batch_size × max_message_bytes is over {MAX_BATCH_BYTES} bytes in memory"
            )
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s is below backoff_initial_s")
        return self


def check_partition(partition: int, partition_count: int) -> None:
    if not 0 <= partition < partition_count:
        raise ValueError(f"partition {partition} is not in 0..{partition_count - 1}")


def partition_of(device_id: str, partitions: int) -> int:
    """The partition the server's mapping puts a device in: nats-server's
    ``{{partition(N,1)}}`` is the 32-bit FNV-1a hash of the wildcard's token, modulo N. A
    replica holds the rule state of its partitions' devices (gateway/replica.py); tests and
    benchmarks know where a device lands."""
    digest = 0x811C9DC5
    for byte in device_id.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % partitions


def _fence_of(consumer: str) -> int:
    """The fence in a consumer's name (``…_f<fence>``); -1 for a name without one."""
    _, sep, digits = consumer.rpartition("_f")
    return int(digits) if sep and digits.isdigit() and len(digits) <= 19 else -1


@dataclass(frozen=True, slots=True)
class IngestMessage:
    """One device message as the MQTT path hands it over (``topic``, ``payload``,
    ``retain``: gateway/pipeline.py's Message), plus where it came from in the stream."""

    topic: str
    payload: bytes
    partition: int
    stream_seq: int
    # A stream holds no retained messages; present for the pipeline's Message protocol.
    retain: bool = False


def subject_to_topic(subject: str) -> str:
    """The MQTT topic a subject came from, as nats-server writes it back for its MQTT
    subscribers: ``.`` separates levels, ``/.`` and ``./`` stand for an empty level at
    the start or end and ``//`` is a ``.`` inside a level (2.10+; 2.9 refuses such topics).
    A lone ``/`` is dropped, as the server does."""
    out: list[str] = []
    i, end = 0, len(subject)
    while i < end:
        char = subject[i]
        if char == "/":  # only in pairs; the server writes no other
            pair = subject[i + 1 : i + 2]
            if pair in (".", "/"):
                out.append("/" if pair == "." else ".")
                i += 1
        else:
            out.append("/" if char == "." else char)
        i += 1
    return "".join(out)


def device_topic(subject: str, prefix: str) -> tuple[int, str] | None:
    """``ingest.<p>.citygw.v1.dev.telemetry`` → ``(p, "citygw/v1/dev/telemetry")``; None
    when the subject is not under ``<prefix>.<partition number>.``."""
    head, _, rest = subject.partition(".")
    number, _, device_subject = rest.partition(".")
    if head != prefix or not number.isdigit() or len(number) > 4 or not device_subject:
        return None
    return int(number), subject_to_topic(device_subject)


class NatsIngestError(Exception):
    """The ingest cannot work with what the server has (a stream of another kind)."""


class PartitionLost(Exception):
    """Another holder took the partition: its consumer is gone or a newer one exists."""


@dataclass(slots=True)
class _Holding:
    partition: int
    fence: int
    task: asyncio.Task[None] | None = None
    sub: JetStreamContext.PullSubscription | None = None
    # The connection epoch the consumer was made in: a reconnect may have lost deliveries.
    epoch: int = -1
    # Its consumer was made at least once: from then on, finding it gone means a takeover.
    made: bool = False
    ready: bool = False


class NatsIngest:
    """Reads the partitions it is given from the ingest stream and hands their batches to
    ``on_batch`` (which commits them, or raises). Runs on the caller's event loop;
    ``on_batch`` is called there, one batch at a time over all partitions."""

    def __init__(
        self, settings: NatsIngestSettings, on_batch: Callable[[list[IngestMessage]], None]
    ) -> None:
        self._settings = settings
        self._on_batch = on_batch
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._epoch = 0
        self._holdings: dict[int, _Holding] = {}
        self.counters: Counter[str] = Counter()
        self.last_error = ""
        self._stopping = False
        parsed = urlparse(settings.url)
        self._shown = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 4222}"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connects (retrying until it succeeds or is cancelled), makes sure the
        stream exists, then takes ``settings.partitions``. Devices' messages published
        before the stream exists are lost: nats-server acks MQTT QoS 1 on receipt."""
        settings = self._settings
        # nats-py retries the first connection as it does reconnects: every
        # reconnect_wait_s, each failure reported to _on_error (counted, logged).
        self._nc = await nats.connect(
            settings.url,
            name="citygw-ingest",
            user=settings.user,
            password=settings.password.get_secret_value() if settings.password else None,
            connect_timeout=settings.connect_timeout_s,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=settings.reconnect_wait_s,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._js = self._nc.jetstream()
        log.info("NATS ingest connected to %s", self._shown)
        try:
            await self._ensure_stream()
        except BaseException:
            await self.stop()
            raise
        for partition in settings.partitions:
            self.take(partition)

    async def stop(self) -> None:
        """Stops reading (consumers stay: unacked messages wait for the next holder)."""
        self._stopping = True
        for holding in list(self._holdings.values()):
            await self._cancel(holding)
        self._holdings.clear()
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _ensure_stream(self) -> None:
        settings = self._settings
        js = self._require_js()
        wanted = StreamConfig(
            name=settings.stream,
            subjects=[f"{settings.subject_prefix}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_bytes=settings.stream_max_bytes,
            max_age=settings.stream_max_age_s,
            max_msg_size=settings.max_message_bytes,
            num_replicas=settings.stream_replicas,
        )
        try:
            found = (await js.stream_info(settings.stream)).config
        except nats.js.errors.NotFoundError:
            await js.add_stream(wanted)
            log.info("NATS ingest created stream %s over %s", settings.stream, wanted.subjects)
            return
        if found.retention != RetentionPolicy.WORK_QUEUE or found.subjects != wanted.subjects:
            raise NatsIngestError(
                f"stream {settings.stream} exists as {found.retention} over {found.subjects};"
                f" the ingest needs a work-queue stream over {wanted.subjects}"
            )
        limits = ("max_bytes", "max_age", "max_msg_size", "discard", "num_replicas")
        if any(getattr(found, name) != getattr(wanted, name) for name in limits):
            await js.update_stream(wanted)
            log.info("NATS ingest updated the limits of stream %s", settings.stream)

    # -- partitions ---------------------------------------------------------------------

    @property
    def partitions(self) -> dict[int, bool]:
        """Partitions held, each with whether its consumer is made and being read."""
        return {p: holding.ready for p, holding in self._holdings.items()}

    def take(self, partition: int, fence: int = 0) -> None:
        """Start reading ``partition`` under the lease with fencing token ``fence``: other
        consumers on it (a previous holder's) are deleted, and reading resumes at its oldest
        unacked message. Taking it again with a new fence restarts it."""
        check_partition(partition, self._settings.partition_count)
        self._require_js()  # started: a loop without a connection could only fail
        if fence < 0:
            raise ValueError(f"fence must be >= 0, not {fence}")
        held = self._holdings.get(partition)
        if held is not None and held.fence == fence:
            return
        holding = _Holding(partition, fence)
        if held is not None:
            self._holdings.pop(partition)
            holding.task = asyncio.create_task(self._retake(held, holding))
        else:
            holding.task = asyncio.create_task(self._read(holding))
        self._holdings[partition] = holding

    async def release(self, partition: int) -> None:
        """Stop reading ``partition`` and delete its consumer, so that the next holder gets
        the unacked messages at once. Does nothing for a partition not held."""
        holding = self._holdings.pop(partition, None)
        if holding is None:
            return
        await self._cancel(holding)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._require_js().delete_consumer(self._settings.stream, self._name(holding))

    async def _retake(self, old: _Holding, new: _Holding) -> None:
        await self._cancel(old)
        await self._read(new)

    async def _cancel(self, holding: _Holding) -> None:
        """Stop a partition's read loop: the subscription first (a fetch in flight ends
        with it), then the task, waited for a bounded time. A fetch cancelled mid-wait can
        stay stuck in nats-py (nats-io/nats.py#373); waiting on it without a bound once
        froze a replica's lease loop until every lease expired. A task left behind can
        only hand its batch to ``on_batch``, which refuses a partition no longer held."""
        task = holding.task
        await self._unsubscribe(holding)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            settings = self._settings
            done, _ = await asyncio.wait({task}, timeout=settings.fetch_wait_s + 1.0)
            if not done:
                self.counters["reads_not_stopped"] += 1
                log.warning("NATS ingest: partition %d's read did not stop; left behind",
                            holding.partition)  # fmt: skip

    def _name(self, holding: _Holding) -> str:
        return f"{self._settings.consumer_prefix}_p{holding.partition}_f{holding.fence}"

    def _filter(self, partition: int) -> str:
        return f"{self._settings.subject_prefix}.{partition}.>"

    # -- the read loop ------------------------------------------------------------------

    async def _read(self, holding: _Holding) -> None:
        """Fetch, hand over, ack; on any doubt about the delivery, recreate the consumer."""
        settings = self._settings
        backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        takeover = True
        try:
            while True:
                try:
                    if holding.sub is None or holding.epoch != self._epoch:
                        await self._open(holding, takeover)
                        takeover = False
                    assert holding.sub is not None
                    try:
                        fetched = await holding.sub.fetch(
                            settings.batch_size, timeout=settings.fetch_wait_s
                        )
                    except TimeoutError:  # nothing new (nats-py raises its own or asyncio's)
                        fetched = []
                    if not fetched:
                        # A fetch from a deleted consumer only times out (nats-server 2.9
                        # answers nothing), so an idle partition checks it is still its own.
                        if not await self._still_ours(holding):
                            raise PartitionLost("its consumer was deleted by a newer holder")
                        continue
                    if await self._deliver(holding, fetched):
                        backoff.reset()
                        continue
                except PartitionLost as exc:
                    self._lost(holding, str(exc))
                    return
                except Exception as exc:  # NATS, the network, or a bug: never a dead partition
                    self._failed(f"partition {holding.partition}", exc)
                    if not await self._still_ours(holding):
                        self._lost(holding, "its consumer was deleted by a newer holder")
                        return
                    await self._unsubscribe(holding)
                # A failed batch or a broken connection: wait, then start over from the
                # oldest unacked message.
                await asyncio.sleep(backoff.next_delay())
        finally:
            holding.ready = False

    async def _deliver(self, holding: _Holding, fetched: list[Msg]) -> bool:
        """Hands one batch over and acks it; False when it must come again."""
        batch = [self._message(holding, msg) for msg in fetched]
        self.counters["fetched"] += len(batch)
        try:
            self._on_batch(batch)
        except Exception as exc:  # the gateway's commit failed: the batch comes again
            self.counters["batches_failed"] += 1
            self.last_error = f"partition {holding.partition}: on_batch raised {exc!r}"[:300]
            log.exception("NATS ingest: partition %d's batch was not taken", holding.partition)
            await self._unsubscribe(holding)
            return False
        # Acks of one consumer are applied in order, so a confirmed ack of the last message
        # means the whole batch is acked.
        for msg in fetched[:-1]:
            await msg.ack()
        await fetched[-1].ack_sync(timeout=self._settings.ack_timeout_s)
        self.counters["acked"] += len(fetched)
        return True

    def _message(self, holding: _Holding, msg: Msg) -> IngestMessage:
        found = device_topic(msg.subject, self._settings.subject_prefix)
        topic = found[1] if found is not None else subject_to_topic(msg.subject)
        return IngestMessage(topic, msg.data, holding.partition, msg.metadata.sequence.stream)

    async def _open(self, holding: _Holding, takeover: bool) -> None:
        """Make this holding's consumer afresh and subscribe to it. On a takeover every
        consumer on the partition goes first; otherwise only our own, and finding it gone
        means a newer holder deleted it."""
        js = self._require_js()
        settings = self._settings
        await self._unsubscribe(holding)
        name = self._name(holding)
        if takeover:
            for info in await js.consumers_info(settings.stream):
                if info.config.filter_subject != self._filter(holding.partition):
                    continue
                # Only an older holder's: a stale replica resuming mid-takeover must not
                # delete the consumer of the holder that replaced it.
                if _fence_of(info.name) > holding.fence:
                    raise PartitionLost("a newer holder has a consumer on it")
                await js.delete_consumer(settings.stream, info.name)
        else:
            try:
                await js.delete_consumer(settings.stream, name)
            except nats.js.errors.NotFoundError:
                raise PartitionLost("its consumer was deleted by a newer holder") from None
        epoch = self._epoch
        config = ConsumerConfig(
            durable_name=name,
            filter_subject=self._filter(holding.partition),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait_s,
            max_ack_pending=settings.batch_size,
        )
        try:
            await js.add_consumer(settings.stream, config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == 10100:  # "filtered consumer not unique on workqueue stream"
                raise PartitionLost("a newer holder has a consumer on it") from None
            raise
        holding.sub = await js.pull_subscribe_bind(name, settings.stream)
        holding.epoch = epoch
        holding.made = holding.ready = True
        log.info("NATS ingest reads partition %d (fence %d)", holding.partition, holding.fence)

    async def _still_ours(self, holding: _Holding) -> bool:
        """Whether our consumer still exists; True when the server cannot tell us now."""
        try:
            await self._require_js().consumer_info(self._settings.stream, self._name(holding))
        except nats.js.errors.NotFoundError:
            return not holding.made
        except (nats.errors.Error, OSError, TimeoutError):
            return True
        return True

    async def _unsubscribe(self, holding: _Holding) -> None:
        sub, holding.sub, holding.ready = holding.sub, None, False
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def _lost(self, holding: _Holding, why: str) -> None:
        self.counters["partitions_lost"] += 1
        self.last_error = f"partition {holding.partition} lost: {why}"
        log.warning("NATS ingest stops reading partition %d: %s", holding.partition, why)
        if self._holdings.get(holding.partition) is holding:
            del self._holdings[holding.partition]

    # -- connection events --------------------------------------------------------------

    def _require_js(self) -> JetStreamContext:
        if self._js is None:
            raise NatsIngestError("NATS ingest is not started")
        return self._js

    def _failed(self, what: str, exc: BaseException) -> None:
        self.counters["errors"] += 1
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"[:300]
        log.warning("NATS ingest %s to %s failed: %s", what, self._shown, self.last_error)

    async def _on_error(self, exc: Exception) -> None:
        self._failed("connection", exc)

    async def _on_disconnected(self) -> None:
        self._epoch += 1
        if not self._stopping:
            log.warning("NATS ingest disconnected from %s", self._shown)

    async def _on_reconnected(self) -> None:
        self._epoch += 1
        self.counters["reconnects"] += 1
        log.info("NATS ingest reconnected to %s", self._shown)

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self._nc is not None and self._nc.is_connected,
            "partitions": sorted(p for p, ready in self.partitions.items() if ready),
            "last_error": self.last_error,
            **self.counters,
        }
