"""The MQTT ingest against a real mosquitto: password + TLS, refusals that are counted and
logged rather than raised, client certificates, and existing fleets' JSON and binary topics
plus device Last Wills decoded end to end. Certificates are made here with the openssl CLI
(the `cryptography` package is not a dependency)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from devices.fleet import FleetSettings, MessageRouter
from devices.fleet.binary import crc16_modbus
from devices.mqtt_ingest import InboundMessage, MqttIngest
from devices.mqtt_settings import MqttSecurity, MqttTls
from devices.registry import Device
from devices.status import DeviceStatus
from domain import Location, Reading
from simulators.mosquitto import Mosquitto

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

USER, PASSWORD = "gateway", "s3cret-Pa55"
TOPIC = "citygw/v1/WL-0001/telemetry"


# --- a small PKI and brokers ----------------------------------------------------------------


EC_KEY = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"


def _openssl(command: str, cwd: Path) -> None:
    """Run ``openssl`` with a space-separated argument list (no argument has spaces)."""
    subprocess.run(["openssl", *command.split()], cwd=cwd, check=True, capture_output=True)


def _issue(dir: Path, name: str, ca: str, extensions: str) -> None:
    _openssl(f"req {EC_KEY} -keyout {name}.key -out {name}.csr -subj /CN={name}", dir)
    (dir / f"{name}.ext").write_text(
        extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    )
    _openssl(
        f"x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial"
        f" -out {name}.crt -days 2 -extfile {name}.ext",
        dir,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1, one for another name, a client certificate,
    and an unrelated CA."""
    dir = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other_ca"):
        _openssl(
            f"req -x509 {EC_KEY} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN={ca}"
            " -addext basicConstraints=critical,CA:TRUE"
            " -addext keyUsage=critical,keyCertSign,cRLSign",
            dir,
        )
    server = "extendedKeyUsage=serverAuth\nsubjectAltName="
    _issue(dir, "server", "ca", server + "IP:127.0.0.1,DNS:localhost")
    _issue(dir, "elsewhere", "ca", server + "DNS:broker.example")
    _issue(dir, "client", "ca", "extendedKeyUsage=clientAuth")
    passwd = ["mosquitto_passwd", "-b", "-c", str(dir / "passwords"), USER, PASSWORD]
    subprocess.run(passwd, check=True, capture_output=True)
    return dir


def secure_broker(workdir: Path, pki: Path, server: str = "server", client_certs: bool = False):
    """mosquitto with only a TLS listener; password-only, or client-certificate-only."""
    broker = Mosquitto(workdir, persistence=False)
    auth = (
        "require_certificate true\nallow_anonymous true\n"
        if client_certs
        else f"allow_anonymous false\npassword_file {pki / 'passwords'}\n"
    )
    broker.config.write_text(
        f"listener {broker.port} 127.0.0.1\n{auth}"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / server}.crt\nkeyfile {pki / server}.key\n"
        # as root, mosquitto would drop to its own user, who cannot read pytest's private tmp
        + ("user root\n" if os.geteuid() == 0 else "")
        + f"log_dest file {broker.dir}/mosquitto.log\n"
    )
    broker.start()
    return broker


@pytest.fixture
def brokers():
    started: list[Mosquitto] = []
    yield started
    for broker in started:
        broker.stop()


# --- driving the ingest as gateway/service.py does ------------------------------------------


class Driven:
    """An MqttIngest on this asyncio loop; ``collect`` takes and acks like the gateway."""

    def __init__(self, url: str, filters: list[str], security: MqttSecurity | None = None):
        self.ready = asyncio.Event()
        self.ingest = MqttIngest(
            url, f"test-{time.monotonic_ns()}", filters, 1, asyncio.get_running_loop(),
            self.ready, security=security,
        )  # fmt: skip
        self.ingest.start()

    async def until(self, check: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.ingest.last_error}")
            await asyncio.sleep(0.05)

    async def collect(self, count: int, timeout_s: float = 10) -> list[InboundMessage]:
        got: list[InboundMessage] = []
        async with asyncio.timeout(timeout_s):
            while len(got) < count:
                await self.ready.wait()
                self.ready.clear()
                batch = self.ingest.take(1000)
                self.ingest.ack(batch)
                got.extend(batch)
        return got

    def stop(self) -> None:
        self.ingest.stop()


def client(port: int, pki: Path | None = None, **will) -> mqtt.Client:
    """A device or publisher: password + TLS when ``pki`` is given, else plain."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{time.monotonic_ns()}")
    if pki is not None:
        c.username_pw_set(USER, PASSWORD)
        c.tls_set(ca_certs=str(pki / "ca.crt"))
    if will:
        c.will_set(**will)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish(c: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def tls(pki: Path, **settings) -> MqttTls:
    return MqttTls(ca_file=pki / "ca.crt", **settings)


# --- credentials and TLS --------------------------------------------------------------------


def test_password_over_tls_receives(tmp_path, pki, brokers):
    broker = secure_broker(tmp_path, pki)
    brokers.append(broker)
    (tmp_path / "pw.txt").write_text(PASSWORD + "\n")
    security = MqttSecurity(
        username=USER, password_file=Path("pw.txt"), tls=MqttTls(ca_file=Path("ca.crt"))
    )
    shutil.copy(pki / "ca.crt", tmp_path / "ca.crt")

    async def scenario() -> list[InboundMessage]:
        driven = Driven(f"mqtts://127.0.0.1:{broker.port}", [TOPIC], security.resolved(tmp_path))
        try:
            await driven.until(lambda: driven.ingest.subscribed, "subscription")
            device = client(broker.port, pki)
            publish(device, TOPIC, b'{"ts": 1, "values": {"level_cm": 1}}')
            device.disconnect()
            return await driven.collect(1)
        finally:
            driven.stop()
            assert driven.ingest.connect_failures == 0

    [message] = asyncio.run(scenario())
    assert (message.topic, message.payload) == (TOPIC, b'{"ts": 1, "values": {"level_cm": 1}}')


def test_wrong_password_is_a_counted_logged_refusal(tmp_path, pki, brokers, caplog):
    broker = secure_broker(tmp_path, pki)
    brokers.append(broker)
    security = MqttSecurity(username=USER, password="wrong", tls=tls(pki))

    async def scenario() -> MqttIngest:
        driven = Driven(f"mqtts://127.0.0.1:{broker.port}", [TOPIC], security)
        try:
            await driven.until(lambda: driven.ingest.connect_failures >= 2, "two refusals")
        finally:
            driven.stop()
        return driven.ingest

    with caplog.at_level(logging.ERROR, logger="devices.mqtt_ingest"):
        ingest = asyncio.run(scenario())
    assert not ingest.connected and ingest.connects == 0
    assert ingest.last_error == "refused by the broker: Not authorized"
    assert f"MQTT connection to 127.0.0.1:{broker.port} failed (1 so far)" in caplog.text


def test_untrusted_broker_certificate_is_refused_even_when_insecure(tmp_path, pki, brokers):
    broker = secure_broker(tmp_path, pki)
    brokers.append(broker)
    for insecure in (False, True):
        wrong_ca = MqttTls(ca_file=pki / "other_ca.crt", insecure=insecure)
        security = MqttSecurity(username=USER, password=PASSWORD, tls=wrong_ca)

        async def scenario(security=security) -> MqttIngest:
            driven = Driven(f"mqtts://127.0.0.1:{broker.port}", [TOPIC], security)
            try:
                await driven.until(lambda: driven.ingest.connect_failures >= 1, "a failure")
            finally:
                driven.stop()
            return driven.ingest

        ingest = asyncio.run(scenario())
        assert ingest.connects == 0
        assert "certificate verify failed" in ingest.last_error


def test_host_name_mismatch_is_refused_unless_insecure(tmp_path, pki, brokers):
    broker = secure_broker(tmp_path, pki, server="elsewhere")  # issued for broker.example
    brokers.append(broker)

    async def scenario(insecure: bool) -> MqttIngest:
        security = MqttSecurity(username=USER, password=PASSWORD, tls=tls(pki, insecure=insecure))
        driven = Driven(f"mqtts://127.0.0.1:{broker.port}", [TOPIC], security)
        try:
            await driven.until(
                lambda: driven.ingest.subscribed or driven.ingest.connect_failures > 0, "an answer"
            )
        finally:
            driven.stop()
        return driven.ingest

    strict = asyncio.run(scenario(insecure=False))
    assert strict.connects == 0
    assert "IP address mismatch" in strict.last_error
    relaxed = asyncio.run(scenario(insecure=True))
    assert (relaxed.connects, relaxed.connect_failures) == (1, 0)


def test_client_certificate_required(tmp_path, pki, brokers, caplog):
    broker = secure_broker(tmp_path, pki, client_certs=True)
    brokers.append(broker)
    url = f"mqtts://127.0.0.1:{broker.port}"

    async def scenario(settings: MqttTls) -> MqttIngest:
        driven = Driven(url, [TOPIC], MqttSecurity(tls=settings))
        try:
            await driven.until(
                lambda: driven.ingest.subscribed or driven.ingest.connect_failures > 0, "an answer"
            )
        finally:
            driven.stop()
        return driven.ingest

    with_cert = asyncio.run(
        scenario(tls(pki, cert_file=pki / "client.crt", key_file=pki / "client.key"))
    )
    assert (with_cert.connects, with_cert.connect_failures) == (1, 0)
    with caplog.at_level(logging.ERROR, logger="devices.mqtt_ingest"):
        without = asyncio.run(scenario(tls(pki)))
    assert without.connects == 0 and without.connect_failures >= 1
    # TLS 1.3: the broker's alert comes after the handshake, so paho sees a dropped socket;
    # its error, which names the cause, is in our log.
    assert "certificate required" in caplog.text


def test_settings_that_cannot_work_fail_at_construction(pki):
    loop = asyncio.new_event_loop()

    def ingest(url: str, security: MqttSecurity) -> MqttIngest:
        return MqttIngest(url, "x", TOPIC, 1, loop, asyncio.Event(), security=security)

    with pytest.raises(ValueError, match="use mqtts://"):
        ingest("mqtt://127.0.0.1:1883", MqttSecurity(tls=tls(pki)))
    with pytest.raises(ValueError, match="both in the URL and in the settings"):
        ingest("mqtt://u:p@127.0.0.1", MqttSecurity(username="u", password="p"))
    with pytest.raises(ValueError, match="TLS settings cannot be used"):
        ingest("mqtts://127.0.0.1", MqttSecurity(tls=MqttTls(ca_file=pki / "nope.crt")))
    with pytest.raises(ValueError, match="password_file"):
        ingest("mqtt://127.0.0.1", MqttSecurity(username="u", password_file=pki / "nope"))
    with pytest.raises(ValueError, match="password or password_file"):
        MqttSecurity(username="u", password="p", password_file=Path("x"))
    with pytest.raises(ValueError, match="need cert_file"):
        MqttTls(key_file=Path("k"))
    loop.close()


# --- existing fleets and Last Wills over a real broker ----------------------------------------

FLEETS = """
- name: acme-water
  topic: acme/wl/+/up
  device_id: {topic: 2, prefix: WL-}
  kind: water_level
  codec:
    type: json
    ts: {path: $.time, format: epoch_ms}
    seq: $.cnt
    fields:
      level_cm: {path: $.data.wl, unit: mm}
- name: packed-lids
  topic: packed/+/up
  device_id: {topic: 1, prefix: MH-}
  kind: manhole_cover
  codec:
    type: binary
    byte_order: big
    fields:
      - {name: ts, type: u32}
      - {name: tilt_deg, type: u16, scale: 0.1, unit: deg}
      - {name: lid_open, type: u8, map: {0: false, 1: true}}
    crc: {algorithm: crc16_modbus}
  status:
    topic: packed/+/lwt
    device_id: {topic: 1, prefix: MH-}
    map: {"1": true, "0": false}
"""
HERE = Location(26.08, 119.3)
REGISTRY = {
    "WL-0001": Device("WL-0001", "water_level", HERE),
    "MH-0002": Device("MH-0002", "manhole_cover", HERE),
}


def test_fleet_json_and_binary_topics_and_last_will_reach_the_ingest(tmp_path, brokers):
    broker = Mosquitto(tmp_path, persistence=False)
    broker.start()
    brokers.append(broker)
    router = MessageRouter([FleetSettings.model_validate(f) for f in yaml.safe_load(FLEETS)])
    now_s = int(time.time())
    body = struct.pack(">IHB", now_s - 5, 123, 1)
    frame = body + crc16_modbus(body).to_bytes(2, "big")
    status_topic = "citygw/v1/MH-0002/status"

    async def scenario() -> list[InboundMessage]:
        driven = Driven(broker.url, router.subscriptions())
        try:
            await driven.until(lambda: driven.ingest.subscribed, "subscription")
            device = client(broker.port, topic=status_topic, payload="offline", qos=1, retain=True)
            publish(device, status_topic, b"online", retain=True)
            doc = {"time": now_s * 1000, "cnt": 9, "data": {"wl": 875}}
            publish(device, "acme/wl/0001/up", json.dumps(doc).encode())
            publish(device, "packed/0002/up", frame)
            publish(device, "packed/0002/lwt", b"0")
            device.socket().close()  # a dead link, no DISCONNECT: the broker sends the will
            got = await driven.collect(5)
        finally:
            driven.stop()
        late = Driven(broker.url, router.subscriptions())  # a gateway starting afterwards
        try:
            return got + await late.collect(1)
        finally:
            late.stop()

    messages = asyncio.run(scenario())
    now_ms = int(time.time() * 1000)
    by_topic: dict[str, list] = {}
    for m in messages:
        result = router.decode(m.topic, m.payload, REGISTRY, now_ms, 300_000, m.retain)
        by_topic.setdefault(m.topic, []).append(result)
    assert by_topic["acme/wl/0001/up"] == [
        Reading("WL-0001", "water_level", now_s * 1000, {"level_cm": 87.5}, 9)
    ]
    assert by_topic["packed/0002/up"] == [
        Reading(
            "MH-0002", "manhole_cover", (now_s - 5) * 1000, {"tilt_deg": 12.3, "lid_open": True}
        )
    ]
    [lwt] = by_topic["packed/0002/lwt"]
    assert (lwt.device_id, lwt.online, lwt.retained) == ("MH-0002", False, False)
    own = [(s.online, s.retained) for s in by_topic[status_topic] if isinstance(s, DeviceStatus)]
    # live: online, then the will; the late gateway gets the retained will only
    assert own == [(True, False), (False, False), (False, True)]
