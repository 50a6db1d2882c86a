"""The MQTT ingest's chunked reads and batched acks (devices/mqtt_ingest.py) against a real
mosquitto: a backlog several 64 KiB chunks long arrives whole and in order, what was acked
is never sent again, and what was not acked is redelivered on the next connection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt_ingest import READ_CHUNK, InboundMessage, MqttIngest
from simulators.mosquitto import Mosquitto

CLIENT_ID = "chunked-ingest"
FILTER = "citygw/v1/+/telemetry"
BACKLOG = 2_000
PAYLOAD = b'{"ts": 1763700000000, "seq": %d, "values": {"fill_pct": 42.5}}' + b" " * 40


def publish(port: int, first: int, count: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [
        client.publish(f"citygw/v1/D{n % 7}/telemetry", PAYLOAD % n, qos=1)
        for n in range(first, first + count)
    ]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


async def session(url: str, take: int, ack: bool, then=None) -> list[InboundMessage]:
    """Connect as the gateway does, take ``take`` messages (acked after each batch when
    ``ack``), call ``then`` once subscribed, and disconnect."""
    ready = asyncio.Event()
    ingest = MqttIngest(url, CLIENT_ID, FILTER, 1, asyncio.get_running_loop(), ready)
    ingest.start()
    got: list[InboundMessage] = []
    try:
        async with asyncio.timeout(30):
            while not ingest.subscribed:
                await asyncio.sleep(0.02)
            if then is not None:
                await asyncio.to_thread(then)
            while len(got) < take:
                await ready.wait()
                ready.clear()
                while batch := ingest.take(500):
                    if ack:
                        ingest.ack(batch)
                    got.extend(batch)
    finally:
        ingest.stop()
    return got


def ended(broker: Mosquitto, sessions: int) -> None:
    """Wait until the broker has read ``sessions`` of our connections to their end. A client
    id that connects again sooner takes the session over before the broker read what the
    old connection sent last (its final acks), and those messages come again: MQTT's
    at-least-once, which the replay guard absorbs, but not what this test checks."""
    line = f"Client {CLIENT_ID} disconnected."
    deadline = time.monotonic() + 30
    while broker.log.read_text(errors="replace").count(line) < sessions:
        assert time.monotonic() < deadline, "the broker never saw the connection end"
        time.sleep(0.02)


def seqs(messages: list[InboundMessage]) -> list[int]:
    return [int(m.payload.split(b'"seq": ')[1].split(b",")[0]) for m in messages]


def test_a_backlog_of_many_chunks_arrives_whole_and_acks_hold_across_connections(tmp_path: Path):
    assert BACKLOG * len(PAYLOAD % 0) > 3 * READ_CHUNK  # the backlog spans several chunks
    broker = Mosquitto(tmp_path, persistence=False)
    broker.start()
    try:
        asyncio.run(session(broker.url, 0, ack=True))  # the persistent session exists
        ended(broker, 1)
        publish(broker.port, 0, BACKLOG)

        # Taken but never acked (a crash before the commit): all of it comes again.
        unacked = asyncio.run(session(broker.url, BACKLOG, ack=False))
        assert seqs(unacked) == list(range(BACKLOG))
        assert all(m.topic == f"citygw/v1/D{n % 7}/telemetry" for n, m in enumerate(unacked))
        assert all(m.payload == PAYLOAD % n and m.qos == 1 for n, m in enumerate(unacked))
        ended(broker, 2)

        acked = asyncio.run(session(broker.url, BACKLOG, ack=True))
        assert seqs(acked) == list(range(BACKLOG))
        ended(broker, 3)

        # Every ack reached the broker: the next connection gets only what is new.
        fresh = asyncio.run(
            session(broker.url, 3, ack=True, then=lambda: publish(broker.port, BACKLOG, 3))
        )
        assert seqs(fresh) == [BACKLOG, BACKLOG + 1, BACKLOG + 2]
    finally:
        broker.stop()
