"""Real processes for end-to-end tests: mosquitto, the case platform, the gateway and the
device simulator, each started exactly as an operator would start it, on loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from simulators.mosquitto import Mosquitto, free_port

CLI = [sys.executable, "-m", "gateway.cli"]
TOKEN = "test-token"
# The gateway API's bearer token, given to the gateway in a file as an operator would.
API_TOKEN = "test-gateway-api-token"
# The secret the platform signs status webhooks with, shared with the gateway in a file.
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"
# Status sync so rare that within a test only a webhook can bring a case's status over.
WEBHOOK_STACK_STATUS_SYNC_S = 3600


def wait_until(
    check: Callable[[], bool], what: str, timeout_s: float, service: Service | None = None
) -> None:
    """Polls ``check`` until it holds. Fails after ``timeout_s``, or at once when ``service``
    (the process that should make it hold) has exited, with the tail of its log (on a
    timeout too, so a failure in CI shows what the process was doing).

    Checks are conditions the test can observe (a port that answers, a count in the stats,
    a row on the platform); timeouts are generous, for a loaded machine: only a failing
    test waits them out.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError, KeyError, ValueError):
            if check():
                return
        if service is not None and not service.running():
            raise AssertionError(f"{service.name} exited, waiting for {what}:\n{service.tail()}")
        time.sleep(0.2)
    shown = f":\n{service.name}'s log:\n{service.tail()}" if service is not None else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{shown}")


class Service:
    """One `citygw` subprocess with its log file; ``env``: variables set for it on top of
    this process's environment (settings an operator gives by environment)."""

    def __init__(
        self, name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.env = env or {}
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [*CLI, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, exactly like a power cut of the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the process freezes as a stalled VM or a long GC pause would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot end on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_simulator(
    broker_url: str, truth: Path, scenario: Path, workdir: Path, time_scale: float | None
) -> Service:
    """``citygw simulate devices``, started: ``scenario``'s fleet publishing to
    ``broker_url`` and writing its ground truth to ``truth``, at the scenario's own time
    scale unless ``time_scale`` is given."""
    args = ["simulate", "devices", "--broker", broker_url, "--truth", str(truth),
            "--scenario", str(scenario)]  # fmt: skip
    if time_scale is not None:
        args += ["--time-scale", str(time_scale)]
    sim = Service("simulator", args, workdir)
    sim.start()
    return sim


class Stack:
    """Broker, platform and gateway wired together in one temp folder."""

    def __init__(
        self,
        workdir: Path,
        platform_unavailable_s: float = 0.0,
        video: dict | None = None,
        scenario: Path | None = None,
        config: dict | None = None,
        adapter: str = "bundled",
        webhooks: bool = False,
        breaker_cooldown_s: float | None = None,
    ) -> None:
        """``scenario``: a device scenario other than the builtin (its registry is the
        gateway's); ``config``: top-level gateway config sections to set or replace;
        ``adapter``: ``open311`` files through the platform's Open311 face instead;
        ``webhooks``: the platform posts each status change to the gateway's
        ``/platform/events``, signed with a secret both read from one file, and status
        sync passes only at start-up within a test's time; ``breaker_cooldown_s``: the
        delivery breaker's cool-down instead of its default (the wait, once the platform is
        back, before the breaker's next probe)."""
        from simulators.scenario import BUILTIN_SCENARIO

        self.workdir = workdir
        self.webhook_secret_path = workdir / "webhook-secret"
        self.scenario = scenario or BUILTIN_SCENARIO
        self.broker = Mosquitto(workdir)
        self.platform_port = free_port()
        self.api_port = free_port()
        self.platform = Service(
            "platform",
            [
                "platform",
                "--port",
                str(self.platform_port),
                "--db",
                str(workdir / "platform.db"),
                "--token",
                TOKEN,
                "--unavailable-for",
                str(platform_unavailable_s),
            ],
            workdir,
            self._webhook_env() if webhooks else None,
        )
        self.adapter = adapter
        self.webhooks = webhooks
        self.breaker_cooldown_s = breaker_cooldown_s
        self.config_path = self._write_config(video, config or {})
        self.gateway = Service("gateway", ["run", "-c", str(self.config_path)], workdir)
        self.platform_http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.platform_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        self.gateway_http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=5,
        )
        self.truth_path = workdir / "truth.json"

    def _write_config(self, video: dict | None, extra: dict) -> Path:
        from simulators.scenario import load_scenario

        registry = self.scenario.parent / load_scenario(self.scenario).spec.registry
        config = {
            "gateway_id": "test",
            "mqtt": {"url": self.broker.url, "client_id": "citygw-test"},
            "devices": {"registry": str(registry)},
            "store": {"path": str(self.workdir / "gateway.db")},
            "case_platform": {
                "url": f"http://127.0.0.1:{self.platform_port}",
                "token": TOKEN,
                "status_sync_s": 1,
                "retry": {"initial_s": 0.2, "max_s": 2},
            },
            "api": {"port": self.api_port, "token_file": str(self.workdir / "api-token")},
        }
        if self.adapter == "open311":
            config["case_platform"] = {**config["case_platform"], **self._open311()}
        if self.webhooks:
            config["case_platform"] = {
                **config["case_platform"],
                "status_sync_s": WEBHOOK_STACK_STATUS_SYNC_S,
                "webhook": {"secret_file": str(self.webhook_secret_path)},
            }
        if self.breaker_cooldown_s is not None:
            breaker = {"cooldown_s": self.breaker_cooldown_s}
            config["case_platform"]["delivery"] = {"breaker": breaker}
        if video is not None:
            config["video"] = video
        config.update(extra)
        (self.workdir / "api-token").write_text(API_TOKEN + "\n")
        path = self.workdir / "gateway.yaml"
        # In the order given: a mapped platform's form fields keep their configured order.
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
        return path

    def _webhook_env(self) -> dict[str, str]:
        """The platform's webhook target, from the environment as its CLI takes it; the
        secret's file is written here, before either process reads it."""
        self.webhook_secret_path.write_text(WEBHOOK_SECRET + "\n")
        return {
            "CITYGW_PLATFORM_WEBHOOK_URL": f"http://127.0.0.1:{self.api_port}/platform/events",
            "CITYGW_PLATFORM_WEBHOOK_SECRET_FILE": str(self.webhook_secret_path),
        }

    def _open311(self) -> dict:
        """The Open311 adapter on the platform's own face: every class code is a service of
        the same code, and the case's priority and devices travel as attributes."""
        from case_bridge.codes import ClassCatalog
        from case_bridge.settings import CaseSettings

        catalog = ClassCatalog(CaseSettings().local_classes)
        return {
            "adapter": "open311",
            "url": None,
            "token": None,
            "open311": {
                "url": f"http://127.0.0.1:{self.platform_port}/open311/v2",
                "api_key": TOKEN,
                "services": {code: code for code in catalog},
                "attributes": {
                    "external_key": "external_key",
                    "priority": "priority",
                    "device_ids": "device_ids",
                },
            },
        }

    def start(self) -> None:
        self.broker.start()
        self.platform.start()
        healthz = self._platform_url("/healthz")
        wait_until(
            lambda: httpx.get(healthz).is_success, "the platform's /healthz", 60, self.platform
        )
        self.start_gateway()

    def start_gateway(self) -> None:
        """Starts the gateway and returns once it is ready for traffic: the broker granted
        its subscriptions (a connection alone is not enough: a message published before the
        SUBACK reaches no one), and every serial port it is configured for is open (bytes
        sent to a port before it is opened are flushed)."""
        self.gateway.start()

        def ready() -> bool:
            stats = self.gateway_stats()
            ports = stats.get("serial", {}).values()
            return stats["mqtt"]["subscribed"] and all(port["connected"] for port in ports)

        wait_until(ready, "the gateway subscribed and its serial ports open", 60, self.gateway)

    def simulator(self, time_scale: float | None = None) -> Service:
        """The device fleet of this stack's scenario, at its own time scale by default."""
        return start_simulator(
            self.broker.url, self.truth_path, self.scenario, self.workdir, time_scale
        )

    def gateway_stats(self) -> dict:
        return self.gateway_http.get("/api/v1/stats").json()

    def cameras_online(self) -> bool:
        """Every configured camera has delivered a frame on its current connection."""
        cameras = self.gateway_stats()["video"]["cameras"].values()
        return bool(cameras) and all(camera["status"] == "online" for camera in cameras)

    def cases(self) -> list[dict]:
        return self.platform_http.get("/api/v1/cases").json()["cases"]

    def truth(self) -> dict:
        return json.loads(self.truth_path.read_text(encoding="utf-8"))

    def wait_caught_up(self, timeout_s: float) -> dict:
        """Until every good reading is stored and the outbox is empty; returns stats."""
        truth = self.truth()
        good = truth["published"] - sum(truth["expected_rejections"].values())

        def done() -> bool:
            stats = self.gateway_stats()
            return stats["readings_stored"] >= good and stats["outbox"]["pending"] == 0

        wait_until(done, f"{good} readings stored and the outbox drained", timeout_s)
        return self.gateway_stats()

    def _platform_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.platform_port}{path}"

    def stop(self) -> None:
        self.gateway.stop()
        self.platform.stop()
        self.broker.stop()
