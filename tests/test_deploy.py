"""The shipped deployment (docker-compose.yml, deploy/) is locked down: the real mosquitto
runs deploy/mosquitto.conf with deploy/mosquitto.acl and refuses anonymous clients, lets a
device publish only under its own topics and the gateway only read; the compose file
publishes no port it need not, and refuses to start without its secrets, none of which is
in the repository."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import time
from pathlib import Path

import compose_checks
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from simulators.mosquitto import free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
PASSWORDS = {"citygw": "gateway-pass", "WL-0001": "device-1-pass", "WL-0002": "device-2-pass"}


# -- the compose file -------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_only_the_brokers_tls_port_is_published_beyond_loopback():
    published = {name: service.get("ports", []) for name, service in compose()["services"].items()}
    assert published == {
        "mosquitto": ["8883:8883"],
        "platform": ["127.0.0.1:8081:8081"],
        "influxdb": ["127.0.0.1:8086:8086"],
        "gateway": ["127.0.0.1:8080:8080"],
        "prometheus": [],
        "grafana": ["127.0.0.1:3000:3000"],
        "simulator": [],
    }


def test_every_secret_comes_from_the_environment_and_is_required():
    services = compose()["services"]
    secrets = compose_checks.secret_environment(services)
    # Prometheus holds the API token (to scrape /metrics), Grafana its admin password and
    # the InfluxDB token (its telemetry data source).
    assert len(secrets) == 10
    for (_, key), value in secrets.items():
        assert value.startswith("${") and ":?" in value, key
    # No secret on a command line, where ps and docker inspect show it.
    for name, service in services.items():
        assert not any("TOKEN" in str(arg) for arg in service.get("command", [])), name


def test_the_gateway_config_holds_no_secret_only_where_to_find_one():
    found = compose_checks.secrets_written_in(
        yaml.safe_load((DEPLOY / "gateway.yaml").read_text(encoding="utf-8"))
    )
    assert found == []


def test_the_brokers_files_are_the_ones_compose_mounts():
    mounted = compose_checks.mounts(compose()["services"]["mosquitto"])
    assert mounted["/mosquitto/config/mosquitto.conf"] == "./deploy/mosquitto.conf"
    assert mounted["/mosquitto/config/acl"] == "./deploy/mosquitto.acl"
    settings = dict(
        line.split(" ", 1)
        for line in (DEPLOY / "mosquitto.conf").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for key in ("password_file", "acl_file", "certfile", "keyfile", "persistence_location"):
        assert any(settings[key].startswith(target) for target in mounted), key


@compose_checks.needs_docker_compose
def test_compose_validates_and_refuses_to_start_without_its_secrets(tmp_path):
    secrets = {
        "CITYGW_API_TOKEN": "a",
        "CITYGW_PLATFORM_TOKEN": "b",
        "CITYGW_MQTT_PASSWORD": "c",
        "CITYGW_INFLUX_TOKEN": "d",
        "INFLUXDB_ADMIN_PASSWORD": "e",
        "GRAFANA_ADMIN_PASSWORD": "f",
        "MQTT_PASSWORD_FILE": str(tmp_path / "passwords"),
        "MQTT_TLS_DIR": str(tmp_path),
    }
    valid = compose_checks.compose_config(COMPOSE, secrets, tmp_path)
    assert valid.returncode == 0, valid.stderr
    for missing in secrets:
        without = {k: v for k, v in secrets.items() if k != missing}
        refused = compose_checks.compose_config(COMPOSE, without, tmp_path)
        assert refused.returncode != 0, missing
        assert f"set {missing}" in refused.stderr, refused.stderr


# -- the broker as deployed -------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """mosquitto on deploy/mosquitto.conf and deploy/mosquitto.acl as shipped; only the
    listeners move to loopback ports and the mounted paths to a temp folder."""
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs the openssl CLI and mosquitto_passwd")
    folder = tmp_path_factory.mktemp("deployed-broker")
    ca = compose_checks.write_server_certificate(folder, "broker")
    for user, password in PASSWORDS.items():
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if user == "citygw" else []),
             str(folder / "passwords"), user, password],
            check=True, capture_output=True,
        )  # fmt: skip
    plain, tls = free_port(), free_port()
    text = (DEPLOY / "mosquitto.conf").read_text()
    for shipped, here in {
        "listener 1883 0.0.0.0": f"listener {plain} 127.0.0.1",
        "listener 8883 0.0.0.0": f"listener {tls} 127.0.0.1",
        "/mosquitto/config/passwords": str(folder / "passwords"),
        "/mosquitto/config/acl": str(DEPLOY / "mosquitto.acl"),
        "/mosquitto/tls/": f"{folder}/",
        "/mosquitto/data/": f"{folder}/",
        "log_dest stdout": f"log_dest file {folder}/mosquitto.log",
    }.items():
        assert shipped in text, shipped
        text = text.replace(shipped, here)
    if os.geteuid() == 0:  # see simulators/mosquitto.py: stay who we are
        text += "user root\n"
    (folder / "mosquitto.conf").write_text(text)
    proc = subprocess.Popen(
        [mosquitto_binary(), "-c", str(folder / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    for port in (plain, tls):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, f"mosquitto did not listen on {port}"
                time.sleep(0.05)
    yield plain, tls, ca
    proc.terminate()
    proc.wait(10)


class Client:
    """One paho client with what it was told: its CONNACK, SUBACKs and messages."""

    def __init__(self, port: int, user: str | None, password: str | None = None,
                 ca: Path | None = None) -> None:  # fmt: skip
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{user}-{time.monotonic_ns()}"
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.connack: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.client.on_connect = lambda c, u, flags, code, props: self.connack.put(code)
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.subacks.put(codes)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.result = self.connack.get(timeout=10)

    def subscribe(self, topic: str) -> list:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_anonymous_and_wrong_passwords_are_refused_on_both_listeners(broker):
    plain, tls, ca = broker
    for port, cert in ((plain, None), (tls, ca)):
        for user, password in ((None, None), ("WL-0001", "wrong"), ("nobody", "x")):
            client = Client(port, user, password, cert)
            assert client.result.is_failure and str(client.result) == "Not authorized"
            client.close()


def test_a_device_publishes_only_under_its_own_topics_and_reads_nothing(broker):
    plain, tls, ca = broker
    gateway = Client(plain, "citygw", PASSWORDS["citygw"])
    device = Client(tls, "WL-0001", PASSWORDS["WL-0001"], ca)  # a field device: over TLS
    assert not gateway.result.is_failure and not device.result.is_failure
    assert [code.value for code in gateway.subscribe("citygw/v1/#")] == [1]
    device.subscribe("citygw/v1/#")
    try:
        device.publish("citygw/v1/WL-0001/telemetry", b"own")
        device.publish("citygw/v1/WL-0002/telemetry", b"posing as another device")
        device.publish("citygw/v1/WL-0002/status", b"offline")
        device.publish("other/tree", b"outside citygw")
        gateway.publish("citygw/v1/WL-0001/telemetry", b"the gateway may not publish")
        device.publish("citygw/v1/WL-0001/status", b"online")  # the last, on one connection
        received = [gateway.messages.get(timeout=10) for _ in range(2)]
        assert received == [
            ("citygw/v1/WL-0001/telemetry", b"own"),
            ("citygw/v1/WL-0001/status", b"online"),
        ]
        # Each refused publish was acknowledged before "online" was sent, and mosquitto
        # routes a message as it takes it: had one been let through, it would be here.
        assert gateway.messages.empty()
        assert device.messages.empty()  # it subscribed to everything, and may read nothing
    finally:
        gateway.close()
        device.close()


def test_one_device_cannot_silence_another(broker):
    """A retained "offline" on another device's status topic would mark it dead."""
    plain, _, _ = broker
    victim_status = "citygw/v1/WL-0002/status"
    attacker = Client(plain, "WL-0001", PASSWORDS["WL-0001"])
    attacker.client.publish(victim_status, b"offline", qos=1, retain=True).wait_for_publish(10)
    attacker.close()
    reader = Client(plain, "citygw", PASSWORDS["citygw"])
    victim = Client(plain, "WL-0002", PASSWORDS["WL-0002"])
    try:
        reader.subscribe(victim_status)
        victim.publish(victim_status, b"online")
        # A retained message comes right after the SUBACK, before anything published later.
        assert reader.messages.get(timeout=10) == (victim_status, b"online")
    finally:
        reader.close()
        victim.close()
