"""The ingest's own PUBLISH reader (devices/mqtt_ingest.py ``_IngestClient``) on a real
socket pair: whatever points the stream is cut at, every QoS 0 and 1 PUBLISH arrives once,
whole and in order, with its topic, message id, QoS and retain flag; packets of any other
kind go to paho's handler between them; a packet larger than a read waits for its rest; a
remaining length longer than MQTT's four bytes ends the connection."""

from __future__ import annotations

import socket
import struct

import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt_ingest import READ_CHUNK, RawPublish, _IngestClient

PROPERTY = settings(max_examples=50, deadline=None)
PINGRESP = bytes([mqtt.PINGRESP, 0])
PIECE = 16_384  # bytes written before the client reads


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length remaining length, as paho writes it."""
    return bytes(mqtt.Client._pack_remaining_length(None, bytearray(), n))  # type: ignore[arg-type]


def publish_packet(message: RawPublish, dup: bool = False) -> bytes:
    topic, payload, mid, qos, retain = message
    header = mqtt.PUBLISH | qos << 1 | (8 if dup else 0) | int(retain)
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body += payload
    return bytes([header]) + remaining_length(len(body)) + body


class Reader:
    """A client whose socket is one end of a pair; the test writes the broker's bytes."""

    def __init__(self) -> None:
        self.got: list[RawPublish] = []
        self.client = _IngestClient(
            self.got.extend, CallbackAPIVersion.VERSION2, client_id="reader",
            protocol=mqtt.MQTTv311, manual_ack=True,
        )  # fmt: skip
        ours, self.broker = socket.socketpair()
        ours.setblocking(False)
        self.client._sock = ours
        self.client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
        self.disconnects = 0
        self.client.on_disconnect = lambda *args: self._disconnected()

    def _disconnected(self) -> None:
        self.disconnects += 1

    def feed(self, data: bytes) -> mqtt.MQTTErrorCode:
        """Write ``data`` (in pieces a socket buffer holds) and let the client read each
        piece whole."""
        rc = mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        for at in range(0, len(data), PIECE):
            self.broker.sendall(data[at : at + PIECE])
            while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self.client._sock is not None:
                rc = self.client.loop_read()
                if self.client._sock is None or not _readable(self.client._sock):
                    break
        return rc

    def close(self) -> None:
        self.broker.close()
        if self.client._sock is not None:
            self.client._sock.close()


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


messages = st.lists(
    st.tuples(
        st.binary(min_size=1, max_size=40),
        st.binary(max_size=300) | st.just(b"x" * (READ_CHUNK + 7)),  # past one read, too
        st.integers(1, 65_535),
        st.sampled_from([0, 1]),
        st.booleans(),
    ).map(lambda m: (m[0], m[1], m[2] if m[3] else 0, m[3], m[4])),
    min_size=1,
    max_size=30,
)


@PROPERTY
@given(messages, st.lists(st.integers(0, 10_000), max_size=12), st.data())
def test_every_publish_arrives_once_in_order_wherever_the_stream_is_cut(batch, cuts, data):
    pings_after = data.draw(st.sets(st.integers(0, len(batch) - 1), max_size=3))
    dups = data.draw(st.lists(st.booleans(), min_size=len(batch), max_size=len(batch)))
    stream = b"".join(
        publish_packet(m, dup) + (PINGRESP if n in pings_after else b"")
        for n, (m, dup) in enumerate(zip(batch, dups, strict=True))
    )
    reader = Reader()
    reader.client._ping_t = 1.0  # waiting for a PINGRESP: paho's handler clears it
    try:
        at = 0
        for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
            if cut > at:
                assert reader.feed(stream[at:cut]) == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
                at = cut
        assert reader.got == batch
        assert reader.disconnects == 0
        assert reader.client._ping_t == (0 if pings_after else 1.0)
    finally:
        reader.close()


def test_a_remaining_length_of_five_bytes_ends_the_connection():
    reader = Reader()
    try:
        good = publish_packet((b"citygw/v1/D1/telemetry", b"{}", 7, 1, False))
        rc = reader.feed(good + bytes([mqtt.PUBLISH, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
        assert rc == mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        assert reader.got == [(b"citygw/v1/D1/telemetry", b"{}", 7, 1, False)]
        assert reader.disconnects == 1
        assert reader.client._sock is None
    finally:
        reader.close()


def test_a_publish_with_an_empty_topic_goes_to_paho_which_refuses_it():
    reader = Reader()
    try:
        rc = reader.feed(publish_packet((b"", b"{}", 0, 0, False)))
        assert rc == mqtt.MQTTErrorCode.MQTT_ERR_PROTOCOL
        assert reader.got == []
        assert reader.disconnects == 1
    finally:
        reader.close()


def test_the_broker_closing_the_socket_is_a_lost_connection():
    reader = Reader()
    try:
        reader.feed(publish_packet((b"t", b"1", 0, 0, False))[:3])  # a packet cut short
        reader.broker.shutdown(socket.SHUT_WR)
        assert reader.client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST
        assert reader.got == []
        assert reader.disconnects == 1
    finally:
        reader.close()
