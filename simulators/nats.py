"""Run a real nats-server with JetStream and its MQTT listener on loopback, for tests and
benchmarks.

Devices keep publishing MQTT (``citygw/v1/<device>/telemetry``, QoS 1) to the server's MQTT
listener; NATS turns the topic into the subject ``citygw.v1.<device>.telemetry``, and the
account's subject mapping moves it to ``ingest.<p>.citygw.v1.<device>.telemetry``, where
``p`` is ``{{partition(N,1)}}``: a hash of the device token modulo N, so one device is
always in one partition. A JetStream stream over ``ingest.>`` keeps the messages for the
gateway's consumers (devices/nats_ingest.py).

Written for Debian's nats-server 2.9, whose quirks shape this file:
- The MQTT listener needs JetStream and a ``server_name`` (it keeps sessions in streams).
- ``{{partition(n, wildcard...)}}`` and ``{{wildcard(i)}}`` exist since 2.8; the mapping
  applies to MQTT publishes too (they enter the account like any client's message).
- An MQTT topic holding ``.`` or a space is refused and the device disconnected (2.10 and
  later write ``.`` as ``//`` instead), so device ids must not contain either.
- A stream's ``max_bytes`` is reserved from ``max_file_store`` when it is created: an
  ingest stream that takes it all leaves the MQTT listener unable to make its session
  stream, and every device is refused ("insufficient storage resources available").
- A QoS 1 PUBACK means the server took the message, not that a stream stored it: a message
  published before the ``ingest.>`` stream exists reaches no one. Create the stream first.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

from simulators.logged_server import start_logged, stop
from simulators.mosquitto import free_port

# The device topics the mappings move (telemetry and status, the gateway's own contract),
# as NATS subjects; each goes to the ingest stream's subjects under its device's partition
# (devices/nats_ingest.py reads them back).
DEVICE_LEAVES = ("telemetry", "status")
INGEST_PREFIX = "ingest"


def partition_mappings(partitions: int) -> dict[str, str]:
    """Source subject → destination, e.g. ``citygw.v1.*.telemetry`` →
    ``ingest.{{partition(N,1)}}.citygw.v1.{{wildcard(1)}}.telemetry``."""
    if not 1 <= partitions <= 1024:
        raise ValueError(f"partitions must be 1..1024, not {partitions}")
    spread = f"{{{{partition({partitions},1)}}}}"
    return {
        f"citygw.v1.*.{leaf}": f"{INGEST_PREFIX}.{spread}.citygw.v1.{{{{wildcard(1)}}}}.{leaf}"
        for leaf in DEVICE_LEAVES
    }


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or "/usr/bin/nats-server"
    if not os.path.exists(found):
        raise RuntimeError("nats-server is not installed: `make test` installs it with apt-get")
    return found


class NatsServer:
    """One nats-server in ``workdir/nats``: client, MQTT and monitoring ports on 127.0.0.1,
    JetStream's file store in the same folder (kept across ``stop``/``start``)."""

    def __init__(self, workdir: Path, partitions: int = 8, name: str = "citygw-test") -> None:
        self.dir = workdir / "nats"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        self.port = free_port()
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.mqtt_url = f"mqtt://127.0.0.1:{self.mqtt_port}"
        self.config = self.dir / "nats.conf"
        self.log = self.dir / "nats.log"
        mappings = partition_mappings(partitions)
        self.config.write_text(
            f'server_name: "{name}"\n'
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            f'log_file: "{self.log}"\n'
            "jetstream {\n"
            f'  store_dir: "{self.dir / "jetstream"}"\n'
            "  max_memory_store: 64MB\n"
            # Streams reserve their max_bytes from this: the ingest stream (1 GiB by default)
            # must leave room for the streams of the MQTT listener's sessions.
            "  max_file_store: 4GB\n"
            "}\n"
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}\n"
            "mappings = {\n"
            + "".join(f'  "{src}": "{dst}"\n' for src, dst in mappings.items())
            + "}\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Starts nats-server and returns once it logged "Server is ready", its client and
        MQTT ports answer and its ``/healthz`` (which covers JetStream) says ok.

        "Server is ready" comes after JetStream restored its streams and every listener is
        open; the process being alive rules out another program that took a port.
        """
        self.proc = start_logged(
            [nats_server_binary(), "-c", str(self.config)], self.log, b"Server is ready",
            self._answers, f"nats-server on {self.port}", timeout_s,
        )  # fmt: skip

    def _answers(self) -> bool:
        try:
            for port in (self.port, self.mqtt_port):
                socket.create_connection(("127.0.0.1", port), 1).close()
            url = f"http://127.0.0.1:{self.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.status == 200
        except OSError:  # refused, or an HTTP error status (urllib's HTTPError is one)
            return False

    def stop(self) -> None:
        """SIGTERM: nats-server closes its clients and flushes JetStream before it exits."""
        stop(self.proc)
