"""NATS ingest benchmark: MQTT QoS 1 into nats-server's partitioned stream, drained by 1 and
by 2 replicas (processes), each reading half of the partitions with NatsIngest.

Per pass: N readings of D devices are published over MQTT QoS 1 (one paho client, every
PUBACK awaited) to nats-server's MQTT listener; the subject mapping spreads them over P
partitions of the work-queue stream. Then the replicas connect, and on one signal take
their partitions; the clock runs from that signal to the last replica's final ack. The
callback only decodes the JSON and checks each device's sequence numbers rise (any that do
not are counted as out of order): this measures the transport, not the gateway's pipeline.

Usage: python bench/nats_partitions.py [--readings 20000] [--devices 500] [--partitions 8]
Prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import nats
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.nats_ingest import IngestMessage, NatsIngest, NatsIngestSettings
from simulators.nats import NatsServer


def publish(server: NatsServer, readings: int, devices: int) -> float:
    """Publishes the backlog over MQTT QoS 1; returns the seconds it took."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-fleet")
    client.max_inflight_messages_set(1000)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", server.mqtt_port)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError("nats-server's MQTT listener accepted no connection")
    started = time.perf_counter()
    infos = []
    for n in range(readings):
        device = f"D{n % devices:05d}"
        payload = json.dumps({"seq": n // devices, "level_pct": 50.0}).encode()
        infos.append(client.publish(f"citygw/v1/{device}/telemetry", payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    took = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return took


def bench_settings(url: str, count: int, held: tuple[int, ...] = ()) -> NatsIngestSettings:
    return NatsIngestSettings(
        url=url, partition_count=count, partitions=held, stream_max_bytes=256 << 20
    )


def replica(url: str, partitions: tuple[int, ...], count: int, expected: int, sync) -> None:
    """One replica process: connects, waits for the go, then reads its partitions until
    ``expected`` messages are acked. ``sync``: (ready queue, go event, results queue)."""
    ready, go, out = sync
    last_seq: dict[str, int] = {}
    disorder = 0

    def on_batch(batch: list[IngestMessage]) -> None:
        nonlocal disorder
        for message in batch:
            seq = json.loads(message.payload)["seq"]
            if seq <= last_seq.get(message.topic, -1):
                disorder += 1
            last_seq[message.topic] = seq

    async def run() -> tuple[float, float]:
        ingest = NatsIngest(bench_settings(url, count), on_batch)
        await ingest.start()
        ready.put(True)
        await asyncio.to_thread(go.wait)
        started = time.time()
        for partition in partitions:
            ingest.take(partition)
        while ingest.counters["acked"] < expected:
            await asyncio.sleep(0.005)
        ended = time.time()
        await ingest.stop()
        return started, ended

    started, ended = asyncio.run(run())
    out.put((started, ended, disorder))


def drain(server: NatsServer, replicas: int, counts: list[int], partitions: int) -> dict:
    """Starts the replicas, each with its share of the partitions, and times the drain."""
    shares = [tuple(range(partitions))[i::replicas] for i in range(replicas)]
    spawn = multiprocessing.get_context("spawn")
    ready, go, out = spawn.Queue(), spawn.Event(), spawn.Queue()
    procs = [
        spawn.Process(
            target=replica,
            args=(server.url, share, partitions, sum(counts[p] for p in share), (ready, go, out)),
        )
        for share in shares
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=60)
    go.set()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(30)
    seconds = max(r[1] for r in results) - min(r[0] for r in results)
    return {"seconds": seconds, "disorder": sum(r[2] for r in results)}


def partition_counts(server: NatsServer, partitions: int) -> list[int]:
    """How many backlog messages each partition holds, from the stream's subjects."""

    async def count() -> list[int]:
        ingest = NatsIngest(bench_settings(server.url, partitions), lambda batch: None)
        await ingest.start()  # makes the stream, reads nothing
        await ingest.stop()
        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info("CITYGW_INGEST", subjects_filter="ingest.>")
        await nc.close()
        per = [0] * partitions
        for subject, n in (info.state.subjects or {}).items():
            per[int(subject.split(".")[1])] += n
        return per

    return asyncio.run(count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp), partitions=args.partitions)
        server.start()
        try:
            for replicas in (1, 2):
                partition_counts(server, args.partitions)  # creates the stream first
                took = publish(server, args.readings, args.devices)
                counts = partition_counts(server, args.partitions)
                assert sum(counts) == args.readings, f"stream holds {sum(counts)}"
                result = drain(server, replicas, counts, args.partitions)
                print(
                    f"{replicas} replica(s): published {args.readings / took:,.0f}/s over MQTT"
                    f" QoS 1; drained {args.readings / result['seconds']:,.0f}/s"
                    f" ({result['seconds']:.2f} s, partitions {counts},"
                    f" out of order {result['disorder']})"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
