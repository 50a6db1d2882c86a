"""Latency under half load: reading → alert and alert → case filed, p50 and p99.

The gateway runs as its own process (``citygw run``) against a local mosquitto and the
bundled platform (another process), as in production. First the gateway's full rate is
measured as bench/ingest.py does (a backlog drained in this process, ``--max-readings``);
then devices publish live QoS 1 readings at half that rate (``--rate`` sets it instead) for
``--seconds``, each stamped with its publish time (``ts``, epoch ms). Every so often a
manhole's lid opens (``lid_open`` true: an alert at once, no dwell) and stays open.

- reading → alert: when the alert row is first seen in the gateway's store (this process
  reads the SQLite file every ``POLL_S``; WAL lets it read beside the writer) minus the
  ``ts`` of the reading that raised it (the alert's own ``ts``). It holds the MQTT hop, the
  batch's decode, rules and commit, and up to ``POLL_S`` of polling.
- alert → case filed: the platform's ``created_at`` of the incident's case (its own
  store) minus when the incident's first alert was seen: the outbox, the dispatcher and
  the HTTP call.

Two baselines run beside it, in the same run: the disk's own fsync latency (a thread
appends 4 KB to a file in the gateway's directory and fsyncs it every ``PROBE_S``; each
commit of the gateway waits for one such fsync, so its tail bounds what any commit can do
on this disk at that moment), and the CPU the gateway process used during the live run
(from /proc), against the load average: on a shared machine a lag episode is seen with
the disk or the cores it waited for.

The publisher writes MQTT 3.1.1 packets on a socket of its own (a paho publisher takes a
core for ~10,000 messages/s on this machine, and would compete with the gateway for it);
a thread reads and drops the broker's PUBACKs.

Usage: python bench/latency.py [--seconds 20] [--devices 3000] [--rate N] [--alerts-per-s 10]
Prints the figures and writes them to their section of BENCHMARKS.md unless ``--no-record``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from benchmarks_doc import write_report
from ingest import (
    _register_gateway,
    gateway_run,
    payloads,
    publish_all,
    services,
    write_config,
    write_registry,
)

from simulators.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
TICK_S = 0.005  # the publisher sends what is due every tick
POLL_S = 0.002  # how often the gateway's alerts table is read
SETTLE_S = 30.0  # the longest wait for the last readings and cases after the run
PROBE_S = 0.01  # how often the fsync probe writes
LID_RULE = "/cover_anomaly"  # the alert key's end for an opened lid (rules/device_rules.py)


def mqtt_length(n: int) -> bytes:
    """MQTT's variable-length remaining length, as paho writes it."""
    return bytes(mqtt.Client._pack_remaining_length(None, bytearray(), n))  # type: ignore[arg-type]


class RawPublisher:
    """A QoS 1 MQTT 3.1.1 publisher on a plain socket: packets are written in bursts, the
    broker's PUBACKs read and counted by a thread."""

    def __init__(self, port: int, client_id: str) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        name = client_id.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack("!H", len(name)) + name
        self._sock.sendall(b"\x10" + mqtt_length(len(body)) + body)
        connack = self._read_exactly(4)
        if connack != b"\x20\x02\x00\x00":
            raise RuntimeError(f"broker refused the publisher: {connack!r}")
        self._mid = 0
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _read_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("broker closed the connection")
            data += chunk
        return data

    def _drain(self) -> None:
        try:
            while self._sock.recv(65_536):
                pass
        except OSError:  # closed by ``close``
            return

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        self._mid = self._mid % 65_535 + 1
        body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", self._mid) + payload
        return b"\x32" + mqtt_length(len(body)) + body

    def send(self, packets: list[bytes]) -> None:
        self._sock.sendall(b"".join(packets))

    def close(self) -> None:
        self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._sock.close()


class FsyncProbe:
    """Appends 4 KB to a file and fsyncs it every ``PROBE_S``, timing each fsync (ms)."""

    def __init__(self, path: Path) -> None:
        self.times: list[float] = []
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        block = b"x" * 4096
        with self._path.open("ab") as out:
            while not self._stop.wait(PROBE_S):
                out.write(block)
                out.flush()
                started = time.perf_counter()
                os.fsync(out.fileno())
                self.times.append((time.perf_counter() - started) * 1000)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(5)
        return self.times


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Seen:
    """Alert rows as first seen in the gateway's store: id → (seen ms, ts, incident id)
    of the alerts opened lids raised."""

    alerts: dict[int, tuple[float, int, str | None]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)


def watch_alerts(db: Path, seen: Seen) -> None:
    """Read new alert rows every ``POLL_S`` and note when each was first visible."""
    while not db.exists():
        time.sleep(POLL_S)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
    last = 0
    try:
        while not seen.stop.is_set():
            try:
                rows = conn.execute(
                    "SELECT id, ts, incident_id, alert_key FROM alerts WHERE id > ?"
                    " AND state = 'firing' ORDER BY id",
                    (last,),
                ).fetchall()
            except sqlite3.OperationalError:  # the schema is not made yet
                rows = []
            now_ms = time.time() * 1000
            for alert_id, ts, incident_id, key in rows:
                if key.endswith(LID_RULE):
                    seen.alerts[alert_id] = (now_ms, ts, incident_id)
                last = alert_id
            time.sleep(POLL_S)
    finally:
        conn.close()


class Fleet:
    """Devices' live readings: normal values, and manholes whose lid opens and stays open."""

    def __init__(self, fleet: list[tuple[str, str]], publisher: RawPublisher) -> None:
        self.devices = fleet
        self._publisher = publisher
        self._rng = random.Random(11)
        self._seq = dict.fromkeys((d for d, _ in fleet), 0)
        self._last_ts = dict.fromkeys((d for d, _ in fleet), 0)
        self._open: set[str] = set()
        self._levels: dict[str, float] = {}
        self._closed = [d for d, kind in fleet if kind == "manhole_cover"]
        self._rng.shuffle(self._closed)
        self._next = 0
        self.sent = 0
        self.opened = 0

    def open_one_lid(self) -> bool:
        if not self._closed:
            return False
        self._open.add(self._closed.pop())
        self.opened += 1
        return True

    def send(self, count: int) -> None:
        now_ms = int(time.time() * 1000)
        packets = []
        for _ in range(count):
            device_id, kind = self.devices[self._next]
            self._next = (self._next + 1) % len(self.devices)
            ts = max(now_ms, self._last_ts[device_id] + 1)
            self._last_ts[device_id] = ts
            self._seq[device_id] += 1
            doc = {"ts": ts, "seq": self._seq[device_id], "values": self._values(device_id, kind)}
            topic = f"citygw/v1/{device_id}/telemetry".encode()
            packets.append(self._publisher.packet(topic, json.dumps(doc).encode()))
        self._publisher.send(packets)
        self.sent += count

    def _values(self, device_id: str, kind: str) -> dict:
        """Each device near a level of its own, with a little noise: nothing a device's
        health takes for a stuck or jumping sensor."""
        level = self._levels.setdefault(device_id, self._rng.uniform(0.2, 0.8))
        noise = self._rng.uniform(-0.01, 0.01)
        if kind == "bin":
            return {"fill_pct": round(80 * (level + noise), 2), "battery_pct": 80}
        if kind == "manhole_cover":
            return {"tilt_deg": round(3 * (level + noise), 3), "lid_open": device_id in self._open}
        return {"level_cm": round(25 * (level + noise), 2)}


def paced_run(fleet: Fleet, rate: float, seconds: float, alerts_per_s: float) -> float:
    """Publish ``rate`` readings/s for ``seconds``, opening a lid ``alerts_per_s`` times a
    second after the first second; return the rate achieved."""
    started = time.perf_counter()
    sent_at_start = fleet.sent
    next_lid = started + 1.0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) - (fleet.sent - sent_at_start)
        if time.perf_counter() >= next_lid:
            fleet.open_one_lid()
            next_lid += 1.0 / alerts_per_s
        if due > 0:
            fleet.send(due)
        time.sleep(TICK_S)
    return (fleet.sent - sent_at_start) / (time.perf_counter() - started)


def count(db: Path, query: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # not made yet
        return 0
    finally:
        conn.close()


STORED = "SELECT coalesce(max(rowid), 0) FROM readings"
PENDING = "SELECT count(*) FROM outbox WHERE state = 'pending'"


def settled(db: Path) -> int:
    """Readings stored and refused so far."""
    return count(db, STORED) + count(db, "SELECT coalesce(max(id), 0) FROM dead_letters")


def warm_up(fleet: Fleet, db: Path) -> bool:
    """Send a reading of every device; true once a whole round is stored."""
    before = settled(db)
    fleet.send(len(fleet.devices))
    time.sleep(0.5)
    return settled(db) - before >= len(fleet.devices)


def wait_for(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def case_times(gateway_db: Path, platform_db: Path) -> dict[str, float]:
    """Incident id → the platform's creation time (epoch ms) of its case."""
    conn = sqlite3.connect(f"file:{gateway_db}?mode=ro", uri=True)
    links = dict(conn.execute("SELECT case_id, incident_id FROM case_links"))
    conn.close()
    conn = sqlite3.connect(f"file:{platform_db}?mode=ro", uri=True)
    created = dict(conn.execute("SELECT id, created_at FROM cases"))
    conn.close()
    return {
        incident: datetime.fromisoformat(created[case_id]).timestamp() * 1000
        for case_id, incident in links.items()
        if case_id in created
    }


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return f"p50 {at(0.50):8.1f} ms   p99 {at(0.99):8.1f} ms   max {ordered[-1]:8.1f} ms"


def measure_max(
    work: Path, broker: Mosquitto, platform_port: int, readings: int, synchronous: str
) -> float:
    """The gateway's full rate on a backlog, as bench/ingest.py measures it."""
    fleet = write_registry(work / "devices.csv", 1000)
    config = write_config(work, "max", broker.url, platform_port, synchronous)
    asyncio.run(_register_gateway(config))
    publish_all(broker.port, payloads(fleet, readings))
    rate, _, _, _ = asyncio.run(gateway_run(config, readings))
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--rate", type=float, help="readings/s (default: half the max)")
    parser.add_argument("--max-readings", type=int, default=30_000)
    parser.add_argument("--alerts-per-s", type=float, default=10.0)
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    with services() as (work, broker, platform_port):
        platform_db = work / "platform.db"
        gateway_proc = None
        seen = Seen()
        try:
            max_rate = None
            rate = args.rate
            if rate is None:
                max_rate = measure_max(
                    work, broker, platform_port, args.max_readings, args.synchronous
                )
                rate = max_rate / 2
            live = work / "live"
            live.mkdir()
            fleet_list = write_registry(live / "devices.csv", args.devices)
            config = write_config(live, "live", broker.url, platform_port, args.synchronous)
            gateway_db = live / "gateway-live.db"
            gateway_proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(live / "gateway.log").open("w"),
            )  # fmt: skip
            watcher = threading.Thread(target=watch_alerts, args=(gateway_db, seen), daemon=True)
            watcher.start()
            publisher = RawPublisher(broker.port, "bench-latency-devices")
            fleet = Fleet(fleet_list, publisher)
            # Ready once a round of every device's readings is stored: subscribed and
            # processing (rounds sent before the subscription are lost).
            wait_for("the warm-up readings", lambda: warm_up(fleet, gateway_db), 60)
            sent_before, stored_before = fleet.sent, settled(gateway_db)
            probe = FsyncProbe(live / "fsync-probe.bin")
            cpu_before, run_started = cpu_seconds(gateway_proc.pid), time.monotonic()
            achieved = paced_run(fleet, rate, args.seconds, args.alerts_per_s)
            gateway_cpu = (cpu_seconds(gateway_proc.pid) - cpu_before) / (
                time.monotonic() - run_started
            )
            fsyncs = probe.stop()
            wait_for(
                "every reading stored",
                lambda: settled(gateway_db) - stored_before >= fleet.sent - sent_before,
                SETTLE_S,
            )
            wait_for("every case filed", lambda: count(gateway_db, PENDING) == 0, SETTLE_S)
            seen.stop.set()
            watcher.join(5)
            publisher.close()
            cases = case_times(gateway_db, platform_db)
            suspect = count(gateway_db, "SELECT count(*) FROM readings WHERE suspect = 1")
            stored_n = count(gateway_db, STORED)
        finally:
            seen.stop.set()
            if gateway_proc is not None:
                gateway_proc.send_signal(signal.SIGTERM)
                gateway_proc.wait(30)

    to_alert = [seen_ms - ts for seen_ms, ts, _ in seen.alerts.values()]
    first_seen: dict[str, float] = {}
    for seen_ms, _, incident in sorted(seen.alerts.values(), key=lambda row: row[0]):
        if incident is not None:
            first_seen.setdefault(incident, seen_ms)
    to_case = [cases[i] - first_seen[i] for i in first_seen if i in cases]
    report = (
        f"devices={args.devices} seconds={args.seconds:g} sqlite synchronous={args.synchronous}\n"
        + (
            f"  gateway max (backlog, in process)  {max_rate:10.0f} readings/s\n"
            if max_rate
            else ""
        )
        + f"  live rate asked / published        {rate:10.0f} / {achieved:.0f} readings/s\n"
        f"  readings stored (suspect)          {stored_n:10d} ({suspect})\n"
        f"  lids opened / their alerts seen    {fleet.opened:10d} / {len(to_alert)}\n"
        f"  incidents with a case              {len(to_case):10d}\n"
        f"  reading -> alert stored   {percentiles(to_alert)}\n"
        f"  alert -> case filed       {percentiles(to_case)}\n"
        f"  baseline: disk fsync      {percentiles(fsyncs)}"
        f" ({len(fsyncs)} probes of 4 KB, same disk)\n"
        f"  gateway CPU during the run {gateway_cpu * 100:9.0f} % of one core\n"
        f"  (store read every {POLL_S * 1000:g} ms; ts in whole ms;"
        f" load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(report)
    if not args.no_record:
        record(report)


def record(report: str) -> None:
    """The latest run's figures in BENCHMARKS.md (their own section, replaced each time)."""
    about = (
        "live QoS 1 readings at half the gateway's measured rate (bench/latency.py; the"
        " issue 14 section reads the figures)"
    )
    write_report("## bench/latency.py: the latest run", about, report)


if __name__ == "__main__":
    main()
