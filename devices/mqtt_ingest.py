"""MQTT ingest on paho's network thread, handing batches to asyncio.

Measured here: paho decodes about twice as many messages per CPU second as aiomqtt, so the
hot path stays on paho's thread and the event loop receives whole batches. The session is
persistent (clean_session=False, fixed client id) and acknowledgements are manual: a QoS 1
message is acked only after the gateway committed what it caused, so a crash before the
commit makes the broker redeliver it.

paho itself reads each packet with three or more ``recv`` calls (type, length, body), goes
back to ``select`` after every packet, and builds an ``MQTTMessage`` and an
``MQTTMessageInfo`` (with a ``threading.Condition``) per message; it writes one PUBACK per
``ack``, each with a wake-up of its thread. Every one of those system calls hands the
interpreter lock over between paho's thread and the event loop, which runs the rules.
``_IngestClient`` reads the socket in 64 KiB chunks, parses every QoS 0 and 1 PUBLISH a
chunk holds itself and queues them in one hand-over, leaves every other packet to paho's
handler, and acknowledges a batch's QoS 1 messages in one write. Measured as
bench/ingest.py does, the gateway's ingest path alone (rules and store left out) took 1.1x
the bare paho subscriber's rate with paho's own reads and acks, 2.2x with chunked reads and
batched acks. Parsing PUBLISH here took paho's thread from ~14 to ~2 µs of the interpreter
lock per message (BENCHMARKS.md, issue 14).

A refused or failed connection (wrong password, untrusted certificate, broker down) is
logged with its cause and counted, and paho keeps retrying with backoff; it never raises
into the gateway. Settings that cannot work at all (missing TLS files, credentials given
twice) raise ValueError at construction, before anything starts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.exception import MalformedPacket

from devices.mqtt_settings import MqttSecurity, MqttTls

log = logging.getLogger(__name__)


READ_CHUNK = 65_536  # bytes read from the socket at once (a few hundred readings)
_PUBACK = struct.Struct("!BBH")  # MQTT 3.1.1 PUBACK: type, remaining length 2, message id
_MAX_LENGTH_BYTES = 4  # MQTT's remaining length takes at most 4 bytes

# A QoS 0 or 1 PUBLISH as read from the socket: topic (raw bytes), payload, message id,
# QoS, retain flag.
RawPublish = tuple[bytes, bytes, int, int, bool]


class _IngestClient(mqtt.Client):
    """paho's client reading the socket in chunks, parsing QoS 0 and 1 PUBLISH packets
    itself and acknowledging batches in one write.

    paho reads a packet with three or more ``recv`` calls and builds an ``MQTTMessage`` (and
    an ``MQTTMessageInfo`` with its ``threading.Condition``) for each. Here ``loop_read``
    reads up to ``READ_CHUNK`` bytes and parses every whole packet the bytes hold: a QoS 0
    or 1 PUBLISH of MQTT 3.1.1 becomes a ``RawPublish``, and the chunk's are handed to
    ``deliver`` at once; every other packet (CONNACK, SUBACK, PINGRESP, QoS 2's flow, and a
    PUBLISH whose lengths do not add up) goes to paho's own handler, in the order read, so
    paho keeps the protocol. A packet cut by the end of a read waits for the rest of its
    bytes; bytes left from a closed connection's socket are never parsed with the next
    one's."""

    def __init__(self, deliver: Callable[[list[RawPublish]], None], *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._deliver = deliver
        self._rest: list[bytes] = []  # the start of a packet the last reads cut
        self._rest_len = 0
        self._rest_need = 0  # bytes that packet needs in all (0: its length is not read yet)
        self._rest_sock: object = None
        self._fast = self._protocol != mqtt.MQTTv5  # a v5 PUBLISH carries properties

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        sock = self._sock
        if sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        try:
            data = self._sock_recv(READ_CHUNK)  # never a buffer sized by a peer's length
        except BlockingIOError:
            return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        except OSError as err:  # as paho's _packet_read: the connection is lost
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return self._loop_rc_handle(mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST)
        if not data:
            return self._loop_rc_handle(mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        if self._rest_sock is not sock:
            self._rest, self._rest_len, self._rest_need = [], 0, 0
            self._rest_sock = sock
        if self._rest:
            self._rest.append(data)
            self._rest_len += len(data)
            if self._rest_len < self._rest_need:
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            data = b"".join(self._rest)
        rc, used, need = self._handle_packets(data, sock)
        if rc:
            return self._loop_rc_handle(rc)
        left = data[used:] if used < len(data) else b""
        self._rest = [left] if left else []
        self._rest_len, self._rest_need = len(left), need
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_packets(self, data: bytes, sock: object) -> tuple[mqtt.MQTTErrorCode, int, int]:
        """Handle every whole packet in ``data``: (paho's result code, bytes used, bytes the
        cut packet at the end needs in all, 0 when its length is not known yet)."""
        at, end = 0, len(data)
        published: list[RawPublish] = []
        rc, need = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS, 0
        while at < end and self._sock is sock:
            header = data[at]
            length, shift, i = 0, 0, at + 1
            while i < end:
                byte = data[i]
                i += 1
                length |= (byte & 127) << shift
                if not byte & 128:
                    break
                shift += 7
                if shift == 7 * _MAX_LENGTH_BYTES:
                    rc = mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
                    break
            else:
                break  # the remaining length is cut
            if rc:
                break
            stop = i + length
            if stop > end:
                need = stop - at
                break
            if header & 0xF6 in _FAST_PUBLISH and length >= 2 and self._fast:
                body = i + 2 + (data[i] << 8 | data[i + 1])
                qos = (header >> 1) & 3
                if i + 2 < body and body + 2 * qos <= stop:  # a topic, and the message id
                    mid = data[body] << 8 | data[body + 1] if qos else 0
                    payload = data[body + 2 * qos : stop]
                    published.append((data[i + 2 : body], payload, mid, qos, bool(header & 1)))
                    at = stop
                    continue
            if published:  # in the order read: those before this packet first
                self._hand_over(published)
                published = []
            rc = self._paho_handle(header, data[i:stop])
            at = stop
            if rc:
                break
        if published:
            self._hand_over(published)
        return rc, at, need

    def _hand_over(self, published: list[RawPublish]) -> None:
        if self._logger is not None and self._logger.isEnabledFor(logging.DEBUG):
            for topic, payload, mid, qos, retain in published:
                self._easy_log(
                    mqtt.MQTT_LOG_DEBUG, "Received PUBLISH (q%d, r%d, m%d), %r, ...  (%d bytes)",
                    qos, retain, mid, topic, len(payload),
                )  # fmt: skip
        with self._in_callback_mutex:
            try:
                self._deliver(published)
            except Exception as err:  # as paho does with on_message
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def _paho_handle(self, header: int, packet: bytes) -> mqtt.MQTTErrorCode:
        """One whole packet through paho's handler, as its ``_packet_read`` hands it over."""
        self._in_packet = _in_packet(header, packet)
        try:
            rc = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = _in_packet()  # as paho leaves it after a packet
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        """``on_message`` alone (QoS 2 messages, which paho's handler keeps delivering):
        paho first walks its tree of per-filter callbacks for every message, and the gateway
        registers none (``message_callback_add``)."""
        on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:  # as paho does: logged, raised unless suppressed
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def ack_qos1(self, mids: Sequence[int]) -> None:
        """PUBACKs for these QoS 1 message ids, queued as one packet (one write, one
        wake-up of paho's thread), in order."""
        if mids:
            packet = b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])
            self._packet_queue(mqtt.PUBACK, packet, 0, 0)


def _in_packet(header: int = 0, packet: bytes = b"") -> Any:
    """paho's state of the packet it reads: ``packet`` whole, or none (``header`` 0)."""
    return {
        "command": header, "have_remaining": int(bool(header)), "remaining_count": [],
        "remaining_mult": 1, "remaining_length": len(packet), "packet": bytearray(packet),
        "to_process": 0, "pos": 0,
    }  # fmt: skip


# A PUBLISH's first byte with the DUP flag and retain bit masked off, QoS 0 or 1.
_FAST_PUBLISH = frozenset({mqtt.PUBLISH, mqtt.PUBLISH | 2})


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt[s]://[user[:password]@]host[:port]``. Errors never quote the URL: it may hold
    a password, and a ``/``, ``?`` or ``#`` left unescaped in one cuts it where ``urlparse``
    then reads the rest as a port."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError("broker URL must be mqtt://host[:port] or mqtts://...")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(
            "broker URL: the port is not a number 0..65535"
            " (percent-encode / ? # @ in a password, or use mqtt.password_file)"
        ) from None
    tls = parsed.scheme == "mqtts"
    return BrokerAddress(
        host=parsed.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
    )


class InboundMessage(NamedTuple):
    """A message as the pipeline takes it (a tuple: several times cheaper to make than a
    frozen dataclass, and as immutable)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int  # which connection delivered it: acks never cross a reconnect
    # Stored by the broker and sent because we subscribed (e.g. a device's Last Will), not
    # published just now.
    retain: bool = False


class MqttIngest:
    def __init__(
        self,
        url: str,
        client_id: str,
        topic_filter: str | Sequence[str],
        qos: int,
        loop: asyncio.AbstractEventLoop,
        ready: asyncio.Event,
        keepalive_s: int = 30,
        security: MqttSecurity | None = None,
    ) -> None:
        self._address = parse_broker_url(url)
        filters = [topic_filter] if isinstance(topic_filter, str) else list(topic_filter)
        if not filters:
            raise ValueError("MQTT ingest needs at least one topic filter")
        self._topic_filters = filters
        self._qos = qos
        self._loop = loop
        self._ready = ready
        self._keepalive_s = keepalive_s
        self._queue: deque[InboundMessage] = deque()
        self._signal_lock = threading.Lock()
        self._signalled = False
        self._connection = 0
        self.connected = False
        # The broker granted every filter on this connection: messages will now arrive.
        self.subscribed = False
        self.received = 0
        self.connects = 0
        self.connect_failures = 0  # refused by the broker or failed (TCP, TLS)
        self.subscribe_failures = 0  # filters the broker refused (e.g. by its ACL)
        self.last_error = ""  # the latest failure, for the operator
        self._attempt_reported = False  # this connection attempt's failure is counted
        self._stopping = False
        self._pending_subscriptions: dict[int, list[str]] = {}
        client = _IngestClient(
            self._on_publishes,
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        self._secure(client, security or MqttSecurity())
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Paho's own errors (e.g. the TLS alert behind a dropped connection) reach our log.
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    def _secure(self, client: mqtt.Client, security: MqttSecurity) -> None:
        address = self._address
        if address.username and security.username:
            raise ValueError("MQTT credentials are given both in the URL and in the settings")
        if address.username:
            client.username_pw_set(address.username, address.password)
        elif security.username:
            client.username_pw_set(security.username, security.secret())
        tls = security.tls
        if tls is not None and not address.tls:
            raise ValueError("MQTT TLS settings are given but the URL is mqtt://: use mqtts://")
        if not address.tls:
            return
        tls = tls or MqttTls()  # mqtts:// alone: the system's trust store
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                keyfile_password=tls.key_password.get_secret_value() if tls.key_password else None,
            )
        except OSError as exc:  # a missing or unreadable CA, cert or key (ssl.SSLError too)
            raise ValueError(f"MQTT TLS settings cannot be used: {exc}") from exc
        if tls.insecure:
            log.warning("MQTT TLS: broker host name is not checked (tls.insecure)")
            client.tls_insecure_set(True)

    def start(self) -> None:
        self._client.connect_async(self._address.host, self._address.port, self._keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "subscribed": self.subscribed,
            "connects": self.connects,
            "received": self.received,
            "connect_failures": self.connect_failures,
            "subscribe_failures": self.subscribe_failures,
            "last_error": self.last_error,
            "queued": len(self._queue),
        }

    def take(self, limit: int) -> list[InboundMessage]:
        """Messages received so far, oldest first (called from the event loop)."""
        with self._signal_lock:
            self._signalled = False
        out: list[InboundMessage] = []
        queue = self._queue
        while queue and len(out) < limit:
            out.append(queue.popleft())
        return out

    def ack(self, messages: list[InboundMessage]) -> None:
        """Acknowledge committed messages. Those from an older connection are not acked:
        the broker redelivers them and the replay guard refuses them as duplicates."""
        current = self._connection
        mids = []
        for message in messages:
            if message.connection != current:
                continue
            if message.qos == 1:
                mids.append(message.mid)
            elif message.qos == 2:
                self._client.ack(message.mid, message.qos)
        self._client.ack_qos1(mids)

    def _on_pre_connect(self, client, userdata) -> None:
        self._attempt_reported = False

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failed(f"refused by the broker: {reason_code}")
            return
        self._connection += 1
        self.connects += 1
        self.connected = True
        filters = self._topic_filters
        _, mid = client.subscribe([(f, self._qos) for f in filters])
        self._pending_subscriptions[mid] = filters
        log.info("MQTT connected to %s:%s", self._address.host, self._address.port)

    def _on_connect_fail(self, client, userdata) -> None:
        """Paho calls this inside its ``except OSError`` around the connect (TCP refused,
        TLS handshake failed), so the exception being handled is the cause."""
        self._failed(str(sys.exc_info()[1] or "connection failed"))

    def _failed(self, why: str) -> None:
        self._attempt_reported = True
        self.connect_failures += 1
        self.last_error = why
        log.error(
            "MQTT connection to %s:%s failed (%d so far): %s",
            self._address.host, self._address.port, self.connect_failures, why,
        )  # fmt: skip

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        filters = self._pending_subscriptions.pop(mid, [])
        refused = [f for f, code in zip(filters, reason_codes, strict=False) if code.is_failure]
        for topic_filter in refused:
            self.subscribe_failures += 1
            self.last_error = f"subscription to {topic_filter} refused"
            log.error("MQTT %s", self.last_error)
        self.subscribed = not refused

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        """A connection closed before any CONNACK is a failed attempt too: with TLS 1.3 a
        broker refuses a missing client certificate only after the handshake."""
        if not (self.connected or self._attempt_reported or self._stopping):
            self._failed(f"closed before the broker accepted the connection ({reason_code})")
            return
        self.connected = self.subscribed = False
        log.warning("MQTT disconnected: %s", reason_code)

    def _on_publishes(self, published: list[RawPublish]) -> None:
        """A read's QoS 0 and 1 messages, on paho's network thread (as ``_on_message``:
        nothing here may raise)."""
        connection = self._connection
        self._queue.extend(
            [
                InboundMessage(_topic_text(topic), payload, mid, qos, connection, retain)
                for topic, payload, mid, qos, retain in published
            ]
        )
        self.received += len(published)
        self._signal()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        """A message paho's own handler delivers (QoS 2). Runs on paho's network thread,
        where an exception would end the thread and with it all ingest: nothing here may
        raise, whatever the message."""
        self._queue.append(
            InboundMessage(
                _topic_text(message._topic), message.payload, message.mid, message.qos,
                self._connection, message.retain,
            )
        )  # fmt: skip
        self.received += 1
        self._signal()

    def _signal(self) -> None:
        """Wake the event loop once until it takes what is queued."""
        with self._signal_lock:
            if self._signalled:
                return
            self._signalled = True
        self._loop.call_soon_threadsafe(self._ready.set)


def _topic_text(topic: bytes) -> str:
    """Brokers check topics are UTF-8; a broken one may not: it is kept, escaped."""
    try:
        return topic.decode("utf-8")
    except UnicodeDecodeError:
        return topic.decode("utf-8", errors="backslashreplace")
