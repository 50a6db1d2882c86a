"""Run a real mosquitto on a loopback port, for tests and benchmarks.

Configured not to drop messages for slow subscribers: mosquitto's defaults
(``max_queued_messages 1000``, 20 in flight) silently drop a large part of a burst, QoS 1
included, for a subscriber that falls behind. Production brokers need the same settings
(see docker-compose.yml).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

NO_DROP_SETTINGS = "max_queued_messages 1000000\nmax_queued_bytes 0\nmax_inflight_messages 0\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(found):
        raise RuntimeError("mosquitto is not installed: `make test` installs it with apt-get")
    return found


class Mosquitto:
    def __init__(self, workdir: Path, persistence: bool = True) -> None:
        self.dir = workdir / "mosquitto"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {self.dir}/\n"
            + NO_DROP_SETTINGS
            + f"log_dest file {self.log}\n"
            # Started as root, mosquitto drops to the "mosquitto" user, which cannot enter a
            # private temp folder (pytest's are 0700): it then silently writes no log and no
            # persistence, and a restarted broker forgets every session. Stay who we are.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Starts mosquitto and returns once this process says it runs and its port answers.

        mosquitto logs "running" only after it has restored its persistence and opened its
        listeners; the process being alive rules out another program that took the port.
        A config that replaces the default must keep ``log_dest file`` at ``self.log``.
        """
        logged = self.log.stat().st_size if self.log.exists() else 0  # restarts append
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see {self.log}")
            if self._says_running(logged):
                try:
                    socket.create_connection(("127.0.0.1", self.port), 1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto not running on {self.port} in {timeout_s} s; see {self.log}")

    def _says_running(self, offset: int) -> bool:
        if not self.log.exists():
            return False
        with self.log.open("rb") as log:
            log.seek(offset)
            return any(line.rstrip().endswith(b" running") for line in log)

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file before it exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
