"""Ingest benchmark: readings/s fully processed by the gateway vs a bare paho subscriber.

Both consumers drain the same backlog from the same local mosquitto in the same process:
N QoS 1 readings are published while the consumer's persistent session is offline, then the
consumer connects and the clock runs from its first message to its N-th. The bare
subscriber only decodes JSON and auto-acks; the gateway decodes, validates against the
registry, runs the replay guard and the rules, stores every reading in SQLite (WAL) and
acks each message after its batch committed; the cases its alerts cause are filed on the
bundled platform (a separate process) while it runs, as in production.

The gateway drains the backlog twice: with the embedded store only, and with the InfluxDB 2
export on as well (influxdb-client writing to the loopback stand-in for InfluxDB's write
endpoint, `simulators/influxdb_stand_in.py`: no InfluxDB 2 can be installed here). The
second pass also reports when the last reading reached InfluxDB: the export runs behind
ingest from the store, so it must not slow ingest, only trail it. The stand-in runs in a
process of its own, as InfluxDB would: its strict line parsing must not take the gateway's
interpreter lock.

Usage: python bench/ingest.py [--readings 50000] [--devices 1000] [--synchronous FULL]
Prints the figures and appends them to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import load_config
from gateway.service import Gateway
from simulators.influxdb_stand_in import InfluxV2StandIn
from simulators.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("bin", "manhole_cover", "water_level")


@contextmanager
def services() -> Iterator[tuple[Path, Mosquitto, int]]:
    """A temporary folder, a local mosquitto and the bundled case platform in its own
    process, as in production (token ``bench``, its store ``platform.db`` in the folder):
    (folder, broker, platform port); all stopped afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work, persistence=False)
        broker.start()
        port = free_port()
        platform_proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "platform", "--port", str(port),
             "--db", str(work / "platform.db"), "--token", "bench"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield work, broker, port
        finally:
            platform_proc.terminate()
            platform_proc.wait(10)
            broker.stop()


def write_registry(path: Path, devices: int) -> list[tuple[str, str]]:
    rows = ["device_id,kind,lat,lon,address,grid_code,part_code,warning_cm,alarm_cm"]
    fleet = []
    for i in range(devices):
        kind = KINDS[i % 3]
        device_id = f"D{i:05d}"
        part = {"bin": "03005", "manhole_cover": "01003", "water_level": "01067"}[kind]
        levels = "30,50" if kind == "water_level" else ","
        lat, lon = 26.05 + (i % 100) * 0.001, 119.28 + (i // 100) * 0.001
        rows.append(
            f"{device_id},{kind},{lat:.6f},{lon:.6f},bench,350102001001001,"
            f"350102{part}{i:06d},{levels}"
        )
        fleet.append((device_id, kind))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return fleet


def payloads(fleet: list[tuple[str, str]], readings: int) -> list[tuple[str, bytes]]:
    """Realistic mix: mostly normal values, some devices in alarm (rules do real work)."""
    rng = random.Random(7)
    start = int(time.time() * 1000) - readings * 10
    out = []
    for n in range(readings):
        device_id, kind = fleet[n % len(fleet)]
        hot = rng.random() < 0.05
        if kind == "bin":
            values = {"fill_pct": 95.0 if hot else rng.uniform(5, 80), "battery_pct": 80}
        elif kind == "manhole_cover":
            values = {"tilt_deg": 20.0 if hot else rng.uniform(0, 4), "lid_open": False}
        else:
            values = {"level_cm": 55.0 if hot else rng.uniform(0, 20)}
        doc = {"ts": start + n * 10, "seq": n // len(fleet) + 1, "values": values}
        out.append((f"citygw/v1/{device_id}/telemetry", json.dumps(doc).encode()))
    return out


def publish_all(url_port: int, messages: list[tuple[str, bytes]]) -> float:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    started = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return len(messages) / elapsed


def register_session(port: int, client_id: str) -> None:
    """Create the persistent session so the broker queues the backlog for it."""
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_subscribe = lambda *args: done.set()
    client.on_connect = lambda c, *a: c.subscribe("citygw/v1/+/telemetry", qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()


def bare_paho(port: int, expected: int) -> tuple[float, float]:
    """Messages/s, and this process's CPU µs per message, from the first to the last."""
    count = 0
    first = last = cpu_first = cpu_last = 0.0
    finished = threading.Event()

    def on_message(client, userdata, message) -> None:
        nonlocal count, first, last, cpu_first, cpu_last
        json.loads(message.payload)
        count += 1
        if count == 1:
            first, cpu_first = time.perf_counter(), time.process_time()
        if count == expected:
            last, cpu_last = time.perf_counter(), time.process_time()
            finished.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False)
    client.on_connect = lambda c, *a: c.subscribe("citygw/v1/+/telemetry", qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not finished.wait(600):
        raise RuntimeError(f"bare subscriber got {count} of {expected}")
    client.disconnect()
    client.loop_stop()
    return (expected - 1) / (last - first), (cpu_last - cpu_first) / (expected - 1) * 1e6


class StandInProcess:
    """The InfluxDB stand-in in a child process; ``points`` is how many it has accepted."""

    def __init__(self, token: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._points = context.Value("q", 0)
        self._stop = context.Event()
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve_stand_in, args=(token, child, self._points, self._stop), daemon=True
        )
        self._process.start()
        self.url, self.org, self.bucket, self.token = parent.recv()

    @property
    def points(self) -> int:
        return self._points.value

    def stop(self) -> None:
        self._stop.set()
        self._process.join(10)


def _serve_stand_in(token: str, pipe, points, stop) -> None:
    stand_in = InfluxV2StandIn(token=token)
    stand_in.start()
    pipe.send((stand_in.url, stand_in.org, stand_in.bucket, stand_in.token))
    while not stop.wait(0.01):
        points.value = len(stand_in.points)
    stand_in.stop()


async def gateway_run(
    config_path: Path, expected: int, influx: StandInProcess | None = None
) -> tuple[float, dict, float | None, float]:
    """Ingest rate, pipeline counters, with ``influx`` the export rate measured from the
    first message received to the last point written, and this process's CPU µs per
    reading from the first message to the last processed (every thread: MQTT, rules,
    store)."""
    gateway = Gateway(load_config(config_path))
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    first = cpu_first = 0.0
    while True:
        await asyncio.sleep(0.002)
        received = gateway.ingest.received if gateway.ingest else 0
        if received and not first:
            first, cpu_first = time.perf_counter(), time.process_time()
        processed = sum(
            v
            for k, v in gateway.pipeline.counters.items()
            if k == "accepted" or k.startswith("rejected_")
        )
        if processed >= expected:
            last, cpu_last = time.perf_counter(), time.process_time()
            break
    counters = dict(gateway.pipeline.counters)
    export_rate = None
    if influx is not None:
        while influx.points < expected:
            await asyncio.sleep(0.01)
        export_rate = (expected - 1) / (time.perf_counter() - first)
    stop.set()
    await runner
    cpu_us = (cpu_last - cpu_first) / (expected - 1) * 1e6
    return (expected - 1) / (last - first), counters, export_rate, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    with services() as (work, broker, platform_port):
        influx = StandInProcess(token="bench")
        try:
            fleet = write_registry(work / "devices.csv", args.devices)
            messages = payloads(fleet, args.readings)
            plain = write_config(work, "plain", broker.url, platform_port, args.synchronous)
            exporting = write_config(
                work, "influx", broker.url, platform_port, args.synchronous, influx
            )

            register_session(broker.port, "bench-bare")
            publish_rate = publish_all(broker.port, messages)
            bare_rate, bare_cpu = bare_paho(broker.port, len(messages))

            asyncio.run(_register_gateway(plain))
            publish_all(broker.port, messages)
            gateway_rate, counters, _, gateway_cpu = asyncio.run(gateway_run(plain, len(messages)))

            asyncio.run(_register_gateway(exporting))
            publish_all(broker.port, messages)
            influx_rate, _, export_rate, _ = asyncio.run(
                gateway_run(exporting, len(messages), influx)
            )
        finally:
            influx.stop()

    ratio = gateway_rate / bare_rate
    report = (
        f"readings={args.readings} devices={args.devices} sqlite synchronous={args.synchronous}\n"
        f"  publisher (QoS 1, paho)           {publish_rate:10.0f} msg/s\n"
        f"  bare paho subscriber (json only)   {bare_rate:10.0f} msg/s\n"
        f"  gateway (decode+rules+store+ack)   {gateway_rate:10.0f} readings/s\n"
        f"  gateway / bare                     {ratio:10.2f}\n"
        f"  CPU µs per reading: bare / gateway {bare_cpu:7.1f} / {gateway_cpu:.1f}"
        f" (bare/gateway {bare_cpu / gateway_cpu:.2f})\n"
        f"  gateway + InfluxDB export: ingest  {influx_rate:10.0f} readings/s\n"
        f"  ... / bare                         {influx_rate / bare_rate:10.2f}\n"
        f"  ... last point in InfluxDB at      {export_rate:10.0f} readings/s\n"
        f"  gateway counters: {counters}"
    )
    print(report)
    if not args.no_record:
        record(report)


def write_config(
    work: Path,
    name: str,
    broker_url: str,
    platform_port: int,
    synchronous: str,
    influx: StandInProcess | None = None,
) -> Path:
    """A gateway config with its own client id (own persistent session) and own store."""
    config: dict = {
        "mqtt": {"url": broker_url, "client_id": f"bench-gateway-{name}"},
        "devices": {"registry": "devices.csv"},
        "store": {"path": f"gateway-{name}.db", "synchronous": synchronous},
        "case_platform": {"url": f"http://127.0.0.1:{platform_port}", "token": "bench"},
        "api": {"enabled": False},
    }
    if influx is not None:
        config["history"] = {
            "influxdb": {"url": influx.url, "org": influx.org, "bucket": influx.bucket,
                         "token": influx.token},
        }  # fmt: skip
    path = work / f"gateway-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _register_gateway(config_path: Path) -> None:
    """Start and stop the gateway once so its persistent session exists on the broker."""
    gateway = Gateway(load_config(config_path))
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    while not (gateway.ingest and gateway.ingest.connected):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # let the SUBACK arrive
    stop.set()
    await runner


def record(report: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    if not path.exists():
        path.write_text(
            "# Benchmarks\n\nFigures are noisy on shared 2-core machines: compare "
            "within one run, never across runs.\n"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with path.open("a", encoding="utf-8") as out:
        out.write(
            f"\n## bench/ingest.py — {stamp} ({platform.machine()}, "
            f"{platform.python_version()})\n\n```\n{report}\n```\n"
        )


if __name__ == "__main__":
    main()
