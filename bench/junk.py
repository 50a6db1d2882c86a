"""What junk traffic costs the gateway: memory and store growth per refused message.

A device (or an attacker with a device's credentials) can publish anything; each message is
refused with a reason, but what it leaves behind must be bounded. The gateway runs as the
operator runs it (`citygw run`, its own process, a real mosquitto), and three floods of
10,000 QoS 1 messages each are published one after the other:

1. baseline: short bad JSON on a registered device's topic (what a buggy device sends);
2. 10 KB device ids in the topic (each once grew the route cache and every dead letter by
   10 KB: +101 MB RSS never released and +335 MB of store for 10,000 messages);
3. 60 KB payloads of junk, each on a topic of its own.

After each flood (every message refused and committed) it reads the gateway's RSS from
/proc and the store's size on disk (database + WAL), and prints the growth per flood beside
the baseline's: floods 2 and 3 should cost about what the baseline costs.

Usage: python bench/junk.py [--messages 10000]; appends its table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from simulators.mosquitto import Mosquitto, free_port
from simulators.scenario import BUILTIN_SCENARIO

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-junk-api-token"

Flood = Callable[[int], tuple[str, bytes]]
FLOODS: dict[str, Flood] = {
    "baseline: short bad JSON": lambda i: ("citygw/v1/BIN-001/telemetry", b'{"ts": "x"'),
    "10 KB device ids": lambda i: (f"citygw/v1/{i:05d}{'D' * 10_000}/telemetry", b"{}"),
    "60 KB payloads, a topic each": lambda i: (
        f"citygw/v1/J{i:05d}/telemetry",
        b"\x00" * 60_000,
    ),
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def store_mb(db: Path) -> float:
    files = [db, db.with_name(db.name + "-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def publish(broker_port: int, messages: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-junk")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def wait(check: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, KeyError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def run(messages: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="citygw-junk-"))
    broker = Mosquitto(work)
    broker.start()
    api_port = free_port()
    config = {
        "mqtt": {"url": broker.url, "client_id": "bench-junk-gateway"},
        "devices": {"registry": str(BUILTIN_SCENARIO.parent / "devices.csv")},
        "store": {"path": str(work / "gateway.db")},
        "case_platform": {"url": f"http://127.0.0.1:{free_port()}", "token": "unused"},
        "api": {"port": api_port, "token_file": str(work / "api-token")},
    }
    (work / "api-token").write_text(TOKEN)
    (work / "gateway.yaml").write_text(yaml.safe_dump(config))
    log = (work / "gateway.log").open("w")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(work / "gateway.yaml")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        wait(lambda: api.get("/api/v1/stats").json()["mqtt"]["subscribed"], "subscription")
        rows = [("before the floods", rss_mb(gateway.pid), store_mb(work / "gateway.db"), 0.0)]
        refused = 0
        for name, make in FLOODS.items():
            started = time.perf_counter()
            publish(broker.port, [make(i) for i in range(messages)])
            refused += messages

            def caught_up(total: int = refused) -> bool:
                return sum(api.get("/api/v1/stats").json()["rejected"].values()) >= total

            wait(caught_up, f"{name}: all refused")
            rows.append(
                (name, rss_mb(gateway.pid), store_mb(work / "gateway.db"),
                 time.perf_counter() - started)
            )  # fmt: skip
        rejected = api.get("/api/v1/stats").json()["rejected"]
    finally:
        gateway.terminate()
        gateway.wait(30)
        broker.stop()
    lines = [
        f"{messages:,} QoS 1 messages per flood, gateway as its own process (`citygw run`)",
        f"{'after':<32} {'RSS MB':>8} {'ΔRSS':>8} {'store MB':>9} {'Δstore':>8} {'s':>6}",
    ]
    for (name, rss, db, secs), (_, prev_rss, prev_db, _) in zip(
        rows, [rows[0], *rows], strict=False
    ):
        lines.append(
            f"{name:<32} {rss:8.1f} {rss - prev_rss:+8.1f} {db:9.1f} {db - prev_db:+8.1f}"
            f" {secs:6.1f}"
        )
    lines.append(f"refused by reason: {rejected}")
    return "\n".join(lines)


def record(report: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as out:
        out.write(
            f"\n## bench/junk.py — {stamp} ({platform.machine()}, "
            f"{platform.python_version()}, {os.cpu_count()} cores)\n\n```\n{report}\n```\n"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    report = run(args.messages)
    print(report)
    record(report)


if __name__ == "__main__":
    main()
