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
from pathlib import Path

from simulators.logged_server import start_logged, stop

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
        self.proc = start_logged(
            [mosquitto_binary(), "-c", str(self.config)], self.log, b" running",
            self._answers, f"mosquitto on {self.port}", timeout_s,
        )  # fmt: skip

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file before it exits."""
        stop(self.proc)
