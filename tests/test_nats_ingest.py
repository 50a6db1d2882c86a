"""Ingest from NATS JetStream against a real nats-server: devices publish MQTT QoS 1 to its
MQTT listener, the server's mapping partitions them, and NatsIngest reads partitions.

Checks: the original topic and payload come through; each device's readings arrive in
order and only in the device's partition; a batch whose callback raised comes again and is
acked exactly once; two replicas split the partitions with nothing lost or doubled; a
released partition resumes after its last acked message; a holder whose lease moved on
loses the partition instead of reading on; a restarted server is read on in order.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import nats
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js.api import RetentionPolicy, StreamConfig
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from devices.nats_ingest import (
    IngestMessage,
    NatsIngest,
    NatsIngestError,
    NatsIngestSettings,
    device_topic,
    partition_of,
    subject_to_topic,
)
from simulators.nats import NatsServer

PARTITIONS = 4


@pytest.fixture
def server(tmp_path) -> Iterator[NatsServer]:
    nats_server = NatsServer(tmp_path, partitions=PARTITIONS)
    nats_server.start()
    yield nats_server
    nats_server.stop()


def ingest_settings(server: NatsServer, **kwargs) -> NatsIngestSettings:
    base = {
        "url": server.url,
        "partition_count": PARTITIONS,
        "batch_size": 16,
        "fetch_wait_s": 0.5,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "reconnect_wait_s": 0.1,
        "stream_max_bytes": 64 << 20,
    }
    return NatsIngestSettings(**(base | kwargs))


def publish(server: NatsServer, messages: list[tuple[str, bytes]]) -> None:
    """Publishes over MQTT QoS 1 from one device client and waits for every PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet", clean_session=True)
    client.max_inflight_messages_set(100)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", server.mqtt_port)
    client.loop_start()
    try:
        assert connected.wait(10), "the MQTT listener accepted no connection"
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def readings(devices: list[str], per_device: int) -> list[tuple[str, bytes]]:
    """``per_device`` numbered messages of each device, devices interleaved."""
    return [
        (f"citygw/v1/{device}/telemetry", f"{device}#{n}".encode())
        for n in range(per_device)
        for device in devices
    ]


async def until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Waits for an observable condition; fails after ``timeout_s`` saying what it waited for."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def stream_messages(ingest: NatsIngest, stream: str = "CITYGW_INGEST") -> int:
    """Messages still in the work-queue stream: the ones not acked."""
    assert ingest._js is not None
    return (await ingest._js.stream_info(stream)).state.messages


def test_a_device_message_over_mqtt_reaches_its_partition_with_topic_and_payload(server):
    device = "bin-0042"
    partition = partition_of(device, PARTITIONS)
    got: list[IngestMessage] = []

    async def scenario() -> None:
        ingest = NatsIngest(ingest_settings(server, partitions=(partition,)), got.extend)
        await ingest.start()  # the stream exists from here: QoS 1 is acked on receipt only
        payload = b'{"level_pct": 87.5, "ts": 1764600000000}'
        await asyncio.to_thread(publish, server, [(f"citygw/v1/{device}/telemetry", payload)])
        await until(lambda: ingest.counters["acked"] == 1, "the message acked")
        assert [(m.topic, m.payload, m.partition, m.retain) for m in got] == [
            (f"citygw/v1/{device}/telemetry", payload, partition, False)
        ]
        assert await stream_messages(ingest) == 0
        await ingest.stop()

    asyncio.run(scenario())


def test_each_device_in_order_and_only_in_its_own_partition(server):
    devices = [f"dev-{i:02d}" for i in range(20)]
    seen: dict[int, list[IngestMessage]] = defaultdict(list)

    def on_batch(batch: list[IngestMessage]) -> None:
        for message in batch:
            seen[message.partition].append(message)

    async def scenario() -> None:
        ingest = NatsIngest(ingest_settings(server, partitions=tuple(range(PARTITIONS))), on_batch)
        await ingest.start()
        await asyncio.to_thread(publish, server, readings(devices, 10))
        await until(lambda: ingest.counters["acked"] == 200, "200 messages acked")
        assert await stream_messages(ingest) == 0
        await ingest.stop()

    asyncio.run(scenario())
    assert sum(len(messages) for messages in seen.values()) == 200
    expected = {p: {d for d in devices if partition_of(d, PARTITIONS) == p} for p in seen}
    assert len(seen) == PARTITIONS  # 20 devices happen to cover all four partitions
    for partition, messages in seen.items():
        by_device: dict[str, list[bytes]] = defaultdict(list)
        for message in messages:
            by_device[message.topic.split("/")[2]].append(message.payload)
        assert set(by_device) == expected[partition]
        for device, payloads in by_device.items():
            assert payloads == [f"{device}#{n}".encode() for n in range(10)]


def test_a_batch_whose_callback_raised_comes_again_and_is_acked_once(server):
    device = "bin-7"
    partition = partition_of(device, PARTITIONS)
    handed: list[list[IngestMessage]] = []

    def on_batch(batch: list[IngestMessage]) -> None:
        handed.append(batch)
        if len(handed) == 1:
            raise RuntimeError("store unavailable")

    async def scenario() -> NatsIngest:
        ingest = NatsIngest(ingest_settings(server, batch_size=10), on_batch)
        await ingest.start()
        await asyncio.to_thread(publish, server, readings([device], 30))
        ingest.take(partition)
        await until(lambda: ingest.counters["acked"] == 30, "30 messages acked")
        assert await stream_messages(ingest) == 0
        await ingest.stop()
        return ingest

    ingest = asyncio.run(scenario())
    first, again = handed[0], handed[1]
    assert [m.payload for m in first] == [f"{device}#{n}".encode() for n in range(10)]
    assert [(m.stream_seq, m.payload) for m in again] == [(m.stream_seq, m.payload) for m in first]
    payloads = [m.payload for batch in handed[1:] for m in batch]
    assert payloads == [f"{device}#{n}".encode() for n in range(30)]
    assert ingest.counters["batches_failed"] == 1
    assert ingest.counters["acked"] == 30
    assert ingest.counters["fetched"] == 40


def test_two_replicas_split_the_devices_with_nothing_lost_or_doubled(server):
    devices = [f"dev-{i:02d}" for i in range(20)]
    got: dict[str, list[IngestMessage]] = {"a": [], "b": []}

    async def scenario() -> None:
        a = NatsIngest(ingest_settings(server, partitions=(0, 1)), got["a"].extend)
        b = NatsIngest(ingest_settings(server, partitions=(2, 3)), got["b"].extend)
        await a.start()
        await b.start()
        await asyncio.to_thread(publish, server, readings(devices, 10))
        total = lambda: a.counters["acked"] + b.counters["acked"]  # noqa: E731
        await until(lambda: total() == 200, "200 messages acked by the two")
        assert await stream_messages(a) == 0
        await a.stop()
        await b.stop()

    asyncio.run(scenario())
    owners = {name: {m.topic.split("/")[2] for m in messages} for name, messages in got.items()}
    assert owners["a"] & owners["b"] == set()
    assert owners["a"] == {d for d in devices if partition_of(d, PARTITIONS) in (0, 1)}
    every = sorted(m.payload for messages in got.values() for m in messages)
    assert every == sorted(payload for _, payload in readings(devices, 10))


def test_a_released_partition_resumes_after_its_last_acked_message(server):
    device = "bin-3"
    partition = partition_of(device, PARTITIONS)
    handed: list[bytes] = []

    def first_holder(batch: list[IngestMessage]) -> None:
        if len(handed) >= 20:  # its third batch: a crash before the commit
            raise RuntimeError("gone before the commit")
        handed.extend(m.payload for m in batch)

    async def scenario() -> list[bytes]:
        first = NatsIngest(ingest_settings(server, batch_size=10), first_holder)
        await first.start()
        await asyncio.to_thread(publish, server, readings([device], 30))
        first.take(partition)
        await until(lambda: first.counters["batches_failed"] >= 1, "the third batch refused")
        assert first.counters["acked"] == 20
        await first.release(partition)
        assert first.partitions == {}
        resumed: list[IngestMessage] = []
        second = NatsIngest(ingest_settings(server, batch_size=10), resumed.extend)
        await second.start()
        second.take(partition, fence=1)
        await until(lambda: second.counters["acked"] == 10, "the last 10 acked")
        assert await stream_messages(second) == 0
        await first.stop()
        await second.stop()
        return [m.payload for m in resumed]

    resumed = asyncio.run(scenario())
    assert handed == [f"{device}#{n}".encode() for n in range(20)]
    assert resumed == [f"{device}#{n}".encode() for n in range(20, 30)]


def test_a_holder_whose_lease_moved_on_loses_the_partition(server):
    """A replica paused past its lease: the new holder takes the partition with a higher
    fence, the old one finds its consumer gone and stops instead of reading on."""
    device = "bin-9"
    partition = partition_of(device, PARTITIONS)
    old_got: list[IngestMessage] = []
    new_got: list[IngestMessage] = []

    async def scenario() -> tuple[NatsIngest, NatsIngest]:
        old = NatsIngest(ingest_settings(server), old_got.extend)
        await old.start()
        old.take(partition, fence=1)
        await until(lambda: old.partitions == {partition: True}, "the old holder reading")
        new = NatsIngest(ingest_settings(server), new_got.extend)
        await new.start()
        new.take(partition, fence=2)
        await until(lambda: new.partitions == {partition: True}, "the new holder reading")
        await until(lambda: old.partitions == {}, "the old holder giving up")
        await asyncio.to_thread(publish, server, readings([device], 5))
        await until(lambda: new.counters["acked"] == 5, "5 acked by the new holder")
        await old.stop()
        await new.stop()
        return old, new

    old, new = asyncio.run(scenario())
    assert old_got == []
    assert [m.payload for m in new_got] == [f"{device}#{n}".encode() for n in range(5)]
    assert old.counters["partitions_lost"] == 1
    assert new.counters["partitions_lost"] == 0


def test_a_restarted_server_is_read_on_from_where_it_was(server):
    """The connection drops with the server; the ingest reconnects, recreates its consumer
    (deliveries in flight may be lost) and reads on, in order, with nothing doubled."""
    device = "bin-5"
    partition = partition_of(device, PARTITIONS)
    got: list[bytes] = []

    def on_batch(batch: list[IngestMessage]) -> None:
        got.extend(m.payload for m in batch)

    async def scenario() -> NatsIngest:
        ingest = NatsIngest(ingest_settings(server, partitions=(partition,)), on_batch)
        await ingest.start()
        await asyncio.to_thread(publish, server, readings([device], 20)[:10])
        await until(lambda: ingest.counters["acked"] == 10, "the first 10 acked")
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        await until(lambda: ingest.counters["reconnects"] >= 1, "the ingest reconnected")
        await asyncio.to_thread(publish, server, readings([device], 20)[10:])
        await until(lambda: ingest.counters["acked"] == 20, "all 20 acked")
        assert await stream_messages(ingest) == 0
        await ingest.stop()
        return ingest

    scenario_ingest = asyncio.run(scenario())
    assert got == [f"{device}#{n}".encode() for n in range(20)]
    assert scenario_ingest.counters["partitions_lost"] == 0


def test_an_ingest_started_before_its_server_connects_once_it_is_up(tmp_path):
    late = NatsServer(tmp_path, partitions=PARTITIONS)
    device = "bin-11"
    got: list[IngestMessage] = []

    async def scenario() -> NatsIngest:
        settings = ingest_settings(late, partitions=(partition_of(device, PARTITIONS),))
        ingest = NatsIngest(settings, got.extend)
        starting = asyncio.create_task(ingest.start())
        await until(lambda: ingest.counters["errors"] >= 2, "two refused attempts")
        await asyncio.to_thread(late.start)
        await starting
        await asyncio.to_thread(publish, late, readings([device], 1))
        await until(lambda: ingest.counters["acked"] == 1, "the reading acked")
        await ingest.stop()
        return ingest

    try:
        ingest = asyncio.run(scenario())
    finally:
        late.stop()
    assert [m.payload for m in got] == [f"{device}#0".encode()]
    assert "ConnectionRefusedError" in ingest.last_error


def ignore(batch: list[IngestMessage]) -> None:
    """A callback for an ingest that must not get as far as reading."""
    raise AssertionError(f"no batch expected, got {len(batch)} messages")


def test_partitions_are_taken_only_when_started_and_in_range(server):
    ingest = NatsIngest(ingest_settings(server), ignore)
    with pytest.raises(NatsIngestError, match="not started"):
        ingest.take(0)

    async def scenario() -> None:
        await ingest.start()
        with pytest.raises(ValueError, match=r"not in 0\.\.3"):
            ingest.take(PARTITIONS)
        await ingest.stop()

    asyncio.run(scenario())


def test_a_stream_of_another_kind_is_refused_and_other_limits_are_brought_in_line(server):
    async def scenario() -> StreamConfig:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        kept = StreamConfig(name="CITYGW_INGEST", subjects=["ingest.>"], max_bytes=1 << 20)
        await js.add_stream(kept)  # limits retention: acked messages would stay
        with pytest.raises(NatsIngestError, match="work-queue"):
            await NatsIngest(ingest_settings(server), ignore).start()
        await js.delete_stream("CITYGW_INGEST")
        kept.retention = RetentionPolicy.WORK_QUEUE
        await js.add_stream(kept)
        ingest = NatsIngest(ingest_settings(server, stream_max_bytes=64 << 20), ignore)
        await ingest.start()
        await ingest.stop()
        found = (await js.stream_info("CITYGW_INGEST")).config
        await nc.close()
        return found

    found = asyncio.run(scenario())
    assert (found.max_bytes, found.max_msg_size) == (64 << 20, 1 << 20)


@pytest.mark.parametrize(
    ("subject", "topic"),
    [
        ("ingest.3.citygw.v1.bin-1.telemetry", "citygw/v1/bin-1/telemetry"),
        ("ingest.2.citygw.v1./.telemetry", "citygw/v1//telemetry"),  # as nats-server 2.9 wrote it
        ("ingest.12./.a", "/a"),
        ("ingest.12.a./", "a/"),
        ("ingest.1.citygw.v1.a//b.telemetry", "citygw/v1/a.b/telemetry"),  # 2.10+'s "."
    ],
)
def test_subjects_give_back_the_devices_topics(subject, topic):
    found = device_topic(subject, "ingest")
    assert found is not None
    assert found[1] == topic


@pytest.mark.parametrize("subject", ["other.1.a", "ingest.x.a", "ingest.1", "ingest.99999.a"])
def test_subjects_outside_the_ingest_prefix_are_not_device_topics(subject):
    assert device_topic(subject, "ingest") is None


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=80))
def test_any_subject_converts_without_raising(subject):
    topic = subject_to_topic(subject)
    assert len(topic) <= len(subject)
    found = device_topic(subject, "ingest")
    assert found is None or 0 <= found[0] <= 9999


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="./ +#"), min_size=1), min_size=1))
def test_topics_of_plain_levels_come_back_exactly(levels):
    assert subject_to_topic(".".join(levels)) == "/".join(levels)


@pytest.mark.parametrize(
    "bad",
    [
        {"url": "nats://user:secret@127.0.0.1:4222"},
        {"url": "http://127.0.0.1:4222"},
        {"partitions": (8,)},
        {"partitions": (1, 1)},
        {"batch_size": 10_000, "max_message_bytes": 8 * 1024 * 1024},
        {"password": "secret"},
        {"stream": "ingest.stream"},
    ],
)
def test_settings_that_cannot_work_are_refused(bad):
    with pytest.raises(ValidationError) as refused:
        NatsIngestSettings(**bad)
    assert "secret" not in str(refused.value)
