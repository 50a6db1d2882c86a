"""An MQTT publisher that knows when every QoS 1 message has been acknowledged.

paho's ``MQTTMessageInfo.wait_for_publish`` raises for a message published while the link is
down, although paho keeps it queued and resends it after reconnecting. Counting PUBACKs in
``on_publish`` instead lets a run ride out a broker restart and still prove, at the end, that
the broker took every message.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from simulators.fleet.contract import QOS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]`` or ``mqtt://user:pass@host:port``; the port defaults to 1883."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        shown = parts._replace(netloc=parts.hostname or "").geturl()  # without credentials
        raise ValueError(f"broker URL must look like mqtt://host:port, got {shown!r}")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or 1883,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class AckedPublisher:
    """One paho client on its own network thread; ``publish`` never blocks on the broker."""

    def __init__(self, broker: BrokerAddress, client_id: str) -> None:
        self._broker = broker
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self._client.max_queued_messages_set(0)  # unbounded: an outage must not drop readings
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._acks = threading.Condition()
        self._connected = False
        self._unacked: set[int] = set()
        self._acked_early: set[int] = set()  # PUBACK seen before publish() returned its mid

    def connect(self, timeout_s: float) -> None:
        """Connect (retrying in the background) and wait until the broker accepts us."""
        self._client.connect_async(self._broker.host, self._broker.port, keepalive=30)
        self._client.loop_start()
        with self._acks:
            if not self._acks.wait_for(lambda: self._connected, timeout_s):
                self.close()
                raise ConnectionError(
                    f"no MQTT connection to {self._broker.host}:{self._broker.port} "
                    f"within {timeout_s:g} s"
                )

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=QOS)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise RuntimeError(f"paho refused to queue a message on {topic}")
        # Any other rc (e.g. no connection) leaves the message queued for resending.
        with self._acks:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._unacked.add(info.mid)

    def wait_acked(self, timeout_s: float) -> None:
        """Block until the broker acknowledged every message published so far."""
        deadline = time.monotonic() + timeout_s
        with self._acks:
            while self._unacked:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._unacked)} message(s) not acknowledged within {timeout_s:g} s"
                    )
                self._acks.wait(left)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused connection: %s", reason_code)
            return
        with self._acks:
            self._connected = True
            self._acks.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code != 0:
            log.warning("lost the broker (%s); paho reconnects and resends", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acks:
            if mid in self._unacked:
                self._unacked.discard(mid)
                self._acks.notify_all()
            else:
                self._acked_early.add(mid)
