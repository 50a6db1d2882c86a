"""``citygw demo``: broker, case platform, device simulator and gateway on embedded
defaults, each its own process as in a deployment, printing cases as they are filed.

The demo watches the case platform (not the gateway's internals), so what it prints is
what a city's operator would see arrive in the workflow system.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

from simulators.mosquitto import free_port
from simulators.scenario import BUILTIN_SCENARIO
from simulators.truth import compare_cases

TOKEN = "demo-token"
DEMO_USER = "demo"  # the console's operator for the run
PRIORITY_CN = {"critical": "特急", "urgent": "紧急", "normal": "一般", "low": "低"}


def wait_for(check, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError, KeyError, ValueError):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout_s:.0f} s")


def demo_config(
    workdir: Path, broker_port: int, platform_port: int, api_port: int, api_token: str
) -> Path:
    """The gateway's config, and its API token in a file beside it (as an operator keeps it)."""
    (workdir / "api-token").write_text(api_token + "\n", encoding="utf-8")
    registry = BUILTIN_SCENARIO.parent / "devices.csv"
    config = {
        "gateway_id": "demo",
        # A username makes amqtt keep the persistent session's queue (it drops anonymous ones).
        "mqtt": {"url": f"mqtt://citygw@127.0.0.1:{broker_port}", "client_id": "citygw-demo"},
        "devices": {"registry": str(registry)},
        "store": {"path": "gateway.db"},
        "case_platform": {
            "url": f"http://127.0.0.1:{platform_port}",
            "token": TOKEN,
            "status_sync_s": 2,
        },
        "api": {"port": api_port, "token_file": "api-token"},
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run_demo(workdir: str, duration_s: float | None) -> int:
    work = Path(workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    broker_port, platform_port, api_port = free_port(), free_port(), free_port()
    api_token = secrets.token_hex(32)  # fresh per run: the demo's API is never open
    config = demo_config(work, broker_port, platform_port, api_port, api_token)
    cli = [sys.executable, "-m", "gateway.cli"]
    logs = (work / "logs").resolve()
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = (logs / f"{name}.log").open("w")
        proc = subprocess.Popen([*cli, *args], stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    started = time.monotonic()
    try:
        start("broker", "broker", "--port", str(broker_port))
        wait_for(
            lambda: socket.create_connection(("127.0.0.1", broker_port), 1).close() or True,
            "embedded MQTT broker",
        )
        start(
            "platform",
            "platform",
            "--port",
            str(platform_port),
            "--db",
            str(work / "platform.db"),
            "--token",
            TOKEN,
        )
        platform = httpx.Client(
            base_url=f"http://127.0.0.1:{platform_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        wait_for(lambda: platform.get("/healthz").is_success, "case platform")
        start("gateway", "run", "-c", str(config))
        gateway = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {api_token}"},
            timeout=5,
        )
        # Subscribed, not just connected: a reading published before the broker granted the
        # gateway's subscription would reach nobody.
        wait_for(lambda: gateway.get("/api/v1/stats").json()["mqtt"]["subscribed"], "gateway")
        truth_path = work / "truth.json"
        simulator = start(
            "simulator",
            "simulate",
            "devices",
            "--broker",
            f"mqtt://127.0.0.1:{broker_port}",
            "--truth",
            str(truth_path),
        )
        password = _console_user(gateway)
        print(
            f"citygw demo: broker :{broker_port}, platform :{platform_port}, gateway API "
            f":{api_port}; logs in {logs}"
        )
        print(
            f"Operations console: http://127.0.0.1:{api_port}/console/ "
            f"(user {DEMO_USER}, password {password}; this run only)"
        )
        print("Cases as the platform receives them:")
        seen: dict[str, dict] = {}
        summary_printed = False
        while duration_s is None or time.monotonic() - started < duration_s:
            for case in platform.get("/api/v1/cases").json()["cases"]:
                _print_change(seen.get(case["id"]), case, time.monotonic() - started)
                seen[case["id"]] = case
            if not summary_printed and simulator.poll() is not None and _caught_up(gateway):
                summary_printed = True
                _print_summary(truth_path, list(seen.values()), gateway)
            time.sleep(0.5)
        if not summary_printed:
            print("(duration ended before the scenario finished)")
            _print_summary(truth_path, list(seen.values()), gateway)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _console_user(gateway: httpx.Client) -> str:
    """An operator for the console, with a fresh password (the demo's store is new each run,
    so nothing outlives it); made through the API like any admin would."""
    password = secrets.token_urlsafe(12)
    reply = gateway.post(
        "/api/v1/users",
        json={"name": DEMO_USER, "role": "operator", "password": password, "reason": "demo"},
    )
    reply.raise_for_status()
    return password


def _caught_up(gateway: httpx.Client) -> bool:
    stats = gateway.get("/api/v1/stats").json()
    return stats["outbox"]["pending"] == 0


def _devices(case: dict) -> list[str]:
    return sorted({item["source_id"] for item in case["evidence"]})


def _print_change(before: dict | None, case: dict, elapsed: float) -> None:
    stamp = f"[{elapsed:6.1f}s]"
    devices = ", ".join(_devices(case))
    if before is None:
        # In the city's time, as the case states it (not this machine's zone).
        deadline = datetime.fromisoformat(case["deadline"]).strftime("%m-%d %H:%M")
        unit = f"  unit: {case['responsible_unit']}" if case.get("responsible_unit") else ""
        where = (
            case["location"]["address"] or f"{case['location']['lat']},{case['location']['lon']}"
        )
        print(
            f"{stamp} FILED     {case['id']}  {case['class_code']} {case['class_name']}  "
            f"{PRIORITY_CN.get(case['priority'], '')}/{case['priority']}  deadline {deadline}  "
            f"{where} (grid {case['location']['grid_code']})  devices: {devices}{unit}",
            flush=True,
        )
        return
    if case["priority"] != before["priority"]:
        print(
            f"{stamp} ESCALATED {case['id']}  {before['priority']} → {case['priority']} "
            f"({PRIORITY_CN.get(case['priority'], '')})",
            flush=True,
        )
    if _devices(case) != _devices(before):
        print(f"{stamp} MERGED    {case['id']}  devices now: {devices}", flush=True)


def _print_summary(truth_path: Path, cases: list[dict], gateway: httpx.Client) -> None:
    if not truth_path.exists():
        print("no ground truth yet (the simulator has not started publishing)")
        return
    truth = json.loads(truth_path.read_text(encoding="utf-8"))
    report = compare_cases(truth, cases)
    print()
    print(report.render())
    rejected = gateway.get("/api/v1/stats").json()["rejected"]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(rejected.items())) or "none"
    print(f"Refused messages (counted, in the dead-letter table): {shown}")
    print("RESULT: cases match the ground truth" if report.ok else "RESULT: MISMATCH", flush=True)
