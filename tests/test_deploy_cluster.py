"""The shipped cluster deployment (docker-compose.cluster.yml, deploy/nats-cluster.conf,
deploy/replica.yaml) is whole and locked down: compose
validates and refuses to start without its secrets, none of which is in the repository;
every service has a healthcheck; the broker's partition mapping and the replicas agree on
N; and the shipped nats-server config, run for real on loopback, takes a device's MQTT
message over TLS with a password into the partition the replicas expect it in."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import jsonschema
import nats
import paho.mqtt.client as mqtt
import pytest
import yaml
from compose_checks import (
    compose_config,
    mounts,
    needs_docker_compose,
    secret_environment,
    secrets_written_in,
    write_server_certificate,
)
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.conninfo import conninfo_to_dict

from devices.nats_ingest import NatsIngest, NatsIngestSettings, partition_of
from gateway.bounded_yaml import load_yaml_file
from gateway.config import ConfigError, load_config
from gateway.config_secrets import SECRET_WORDS
from simulators.mosquitto import free_port
from simulators.nats import NatsServer, nats_server_binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.cluster.yml"
REPLICA = DEPLOY / "replica.yaml"
NATS_CONF = DEPLOY / "nats-cluster.conf"
REPLICAS = ("replica-1", "replica-2", "replica-3")
# What deploy/replica.yaml reads from the environment.
REPLICA_SECRETS = {
    "CITYGW_POSTGRES_PASSWORD": "pg-pass",
    "CITYGW_NATS_PASSWORD": "nats-pass",
    "CITYGW_PLATFORM_TOKEN": "platform-token",
}
NATS_SECRETS = {"CITYGW_NATS_PASSWORD": "nats-pass", "CITYGW_DEVICE_MQTT_PASSWORD": "device-pass"}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def mapping_partitions(conf: str) -> int:
    """N of the ``{{partition(N,1)}}`` mapping in a nats-server config."""
    (n,) = set(re.findall(r"\{\{partition\((\d+),1\)\}\}", conf))
    return int(n)


# -- the compose file -------------------------------------------------------------------------


def test_the_services_and_what_each_publishes():
    published = {name: service.get("ports", []) for name, service in compose()["services"].items()}
    assert published == {
        "nats": ["8883:8883"],  # MQTT over TLS for field devices
        "postgres": [],
        "platform": ["127.0.0.1:8081:8081"],
        **{name: [] for name in REPLICAS},
    }


def test_every_service_has_a_healthcheck_and_replicas_wait_for_healthy_parts():
    services = compose()["services"]
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    for name in REPLICAS:
        replica = services[name]
        assert replica["command"] == ["replica", "-c", "/etc/citygw/replica.yaml"]
        assert mounts(replica) == {
            "/etc/citygw/replica.yaml": "./deploy/replica.yaml",
            "/data/evidence": "evidence",
        }
        healthy = {"condition": "service_healthy"}
        assert replica["depends_on"] == {"nats": healthy, "postgres": healthy, "platform": healthy}
        # The replica's own /healthz, on the port deploy/replica.yaml serves it.
        status = yaml.safe_load(REPLICA.read_text(encoding="utf-8"))["cluster"]["status"]
        assert status["host"] == "127.0.0.1"
        probe = f"http://127.0.0.1:{status['port']}/healthz"
        assert probe in replica["healthcheck"]["test"][-1]


def test_every_replica_keeps_evidence_in_the_one_shared_volume():
    """A case's pictures outlive the replica that took them: every replica mounts one named
    volume at the folder deploy/replica.yaml's evidence.dir names (gateway/evidence.py)."""
    config = yaml.safe_load(REPLICA.read_text(encoding="utf-8"))
    folder = config["evidence"]["dir"]
    assert "evidence" in compose()["volumes"]
    services = compose()["services"]
    assert {mounts(services[name]).get(folder) for name in REPLICAS} == {"evidence"}


def test_evidence_links_have_a_listener_apart_from_status():
    """Platforms on the compose network reach the evidence links (port 9109, published to
    no host), while /healthz and /stats stay on the container's loopback, another port."""
    cluster = yaml.safe_load(REPLICA.read_text(encoding="utf-8"))["cluster"]
    assert cluster["status"] == {"host": "127.0.0.1", "port": 9108}
    assert cluster["evidence_server"] == {
        "host": "0.0.0.0", "port": 9109, "max_connections": 32, "response_deadline_s": 60,
    }  # fmt: skip
    assert "9109" in COMPOSE.read_text(encoding="utf-8")  # the compose file names it


def test_the_image_user_has_a_fixed_uid():
    """An NFS export shared by replicas on several machines can be owned in advance."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN useradd --system --uid 10001 \S", dockerfile, re.M)


def test_every_secret_comes_from_the_environment_and_is_required():
    services = compose()["services"]
    secrets = secret_environment(services)
    # Each replica: PostgreSQL, NATS, the platform; nats: its two users; postgres; platform.
    assert len(secrets) == 3 * 3 + 2 + 1 + 1
    for (_, key), value in secrets.items():
        source = "CITYGW_POSTGRES_PASSWORD" if key == "POSTGRES_PASSWORD" else key  # the image's
        assert value == f"${{{source}:?set {source}}}", key
    for name, service in services.items():  # never on a command line (ps, docker inspect)
        command = str(service.get("command", []))
        assert not any(word.upper() in command for word in SECRET_WORDS), name


def test_the_configs_hold_no_secret_only_where_to_find_one():
    assert secrets_written_in(yaml.safe_load(REPLICA.read_text(encoding="utf-8"))) == []
    passwords = re.findall(r"password:\s*(\S+?)[,}\s]", NATS_CONF.read_text())
    assert passwords == ["$CITYGW_NATS_PASSWORD", "$CITYGW_DEVICE_MQTT_PASSWORD"]


def test_the_broker_and_the_replicas_agree_on_the_partitions(tmp_path):
    services = compose()["services"]
    nats_mounts = mounts(services["nats"])
    assert nats_mounts["/etc/nats/nats.conf"] == "./deploy/nats-cluster.conf"
    assert services["nats"]["command"] == ["nats-server", "--config", "/etc/nats/nats.conf"]
    conf = NATS_CONF.read_text()
    n = mapping_partitions(conf)
    settings = yaml.safe_load(REPLICA.read_text(encoding="utf-8"))["cluster"]
    assert settings["nats"]["partition_count"] == n
    # Each mapping of the tests' nats-server (simulators/nats.py), for the same N.
    tested = NatsServer(tmp_path, partitions=n).config.read_text()
    mappings = re.findall(r'^\s*("citygw\.v1\.[^"]+": "[^"]+")$', tested, re.MULTILINE)
    assert mappings and all(mapping in conf for mapping in mappings), mappings
    # The paths the config names are the ones compose mounts.
    for path in ("/data/jetstream", "/etc/nats/tls/server.crt", "/etc/nats/tls/server.key"):
        assert path in conf and any(path.startswith(target) for target in nats_mounts), path
    dsn = conninfo_to_dict(settings["postgres_dsn"])
    postgres = services["postgres"]["environment"]
    assert (dsn["host"], dsn["user"], dsn["dbname"]) == (
        "postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_DB"],
    )  # fmt: skip


@needs_docker_compose
def test_compose_validates_and_refuses_to_start_without_its_secrets(tmp_path):
    secrets = {
        **REPLICA_SECRETS,
        **NATS_SECRETS,
        "MQTT_TLS_DIR": str(tmp_path),
    }
    valid = compose_config(COMPOSE, secrets, tmp_path)
    assert valid.returncode == 0, valid.stderr
    for missing in secrets:
        left = {k: v for k, v in secrets.items() if k != missing}
        refused = compose_config(COMPOSE, left, tmp_path)
        assert refused.returncode != 0, missing
        assert f"set {missing}" in refused.stderr, refused.stderr


# -- the replicas' config ---------------------------------------------------------------------


def test_the_replica_config_loads_with_its_secrets_and_refuses_without_each(monkeypatch):
    for name, value in REPLICA_SECRETS.items():
        monkeypatch.setenv(name, value)
    config = load_config(REPLICA)
    assert config.cluster is not None and not config.api.enabled
    assert config.cluster.postgres_password.get_secret_value() == "pg-pass"
    assert config.cluster.nats.password.get_secret_value() == "nats-pass"
    assert config.cluster.nats.url == "nats://nats:4222"
    assert config.cluster.replica_id is None  # each process names itself
    schema = jsonschema.Draft202012Validator(
        yaml.safe_load((DEPLOY / "gateway.schema.json").read_text())
    )
    assert list(schema.iter_errors(load_yaml_file(REPLICA)[1])) == []
    for name, value in REPLICA_SECRETS.items():
        monkeypatch.delenv(name)
        with pytest.raises(ConfigError, match=f"{name} is not set") as refused:
            load_config(REPLICA)
        assert not any(secret in str(refused.value) for secret in REPLICA_SECRETS.values())
        monkeypatch.setenv(name, value)


def test_the_replica_config_keeps_the_district_gateways_rules_and_cases():
    """One gateway, two deployments: what decides cases is the same in both files."""
    district = yaml.safe_load((DEPLOY / "gateway.yaml").read_text(encoding="utf-8"))
    replica = yaml.safe_load(REPLICA.read_text(encoding="utf-8"))
    for section in ("timezone", "case_platform", "cases", "merge", "rules", "alerting"):
        assert replica[section] == district[section], section


# -- the shipped nats-server config, run -------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_nats(tmp_path_factory):
    """nats-server on deploy/nats-cluster.conf as shipped; only the listeners move to
    loopback ports and the mounted paths to a temp folder."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    folder = tmp_path_factory.mktemp("shipped-nats")
    ca = write_server_certificate(folder, "nats")
    client, mqtt_port, http = free_port(), free_port(), free_port()
    text = NATS_CONF.read_text()
    for shipped, here in {
        "listen: 0.0.0.0:4222": f"listen: 127.0.0.1:{client}",
        "http: 127.0.0.1:8222": f"http: 127.0.0.1:{http}",
        "listen: 0.0.0.0:8883": f"listen: 127.0.0.1:{mqtt_port}",
        "/data/jetstream": str(folder / "jetstream"),
        "/etc/nats/tls/": f"{folder}/",
    }.items():
        assert shipped in text, shipped
        text = text.replace(shipped, here)
    conf = folder / "nats.conf"
    conf.write_text(text)
    log = folder / "nats.log"
    base_env = {"PATH": os.environ["PATH"]}
    refused = subprocess.run(
        [nats_server_binary(), "-c", str(conf)], env=base_env, capture_output=True, timeout=30
    )
    assert refused.returncode != 0
    assert b"CITYGW_NATS_PASSWORD" in refused.stderr  # named, and the server never started
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], env={**base_env, **NATS_SECRETS},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 20
    while b"Server is ready" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    for port in (client, mqtt_port):
        socket.create_connection(("127.0.0.1", port), 2).close()
    yield f"nats://127.0.0.1:{client}", mqtt_port, ca, mapping_partitions(text)
    proc.terminate()
    proc.wait(10)


def mqtt_device(port: int, ca: Path, password: str) -> tuple[mqtt.Client, object]:
    """A field device over TLS; returns the client (looping) and its CONNACK reason."""
    got: list = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{time.monotonic_ns()}")
    client.username_pw_set("device", password)
    client.tls_set(ca_certs=str(ca))
    client.on_connect = lambda c, u, flags, code, props: got.append(code)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not got:
        assert time.monotonic() < deadline, "no CONNACK"
        time.sleep(0.01)
    return client, got[0]


def test_a_device_message_lands_in_its_partition_and_nothing_else_is_taken(shipped_nats):
    url, mqtt_port, ca, n = shipped_nats
    devices = ["WL-0001", "BIN-0042", "MC-0007"]
    settings = NatsIngestSettings(
        url=url, user="citygw", password=NATS_SECRETS["CITYGW_NATS_PASSWORD"], partition_count=n,
        stream_max_bytes=64 << 20,
    )  # fmt: skip

    async def stream_subjects(publish) -> dict[str, int]:
        ingest = NatsIngest(settings, lambda batch: None)
        await ingest.start()  # creates the stream before anything is published
        await ingest.stop()
        await asyncio.to_thread(publish)
        nc = await nats.connect(url, user="citygw", password=NATS_SECRETS["CITYGW_NATS_PASSWORD"])
        try:
            js = nc.jetstream()
            info = await js.stream_info(settings.stream, subjects_filter=">")
            return dict(info.state.subjects or {})
        finally:
            await nc.close()

    def publish() -> None:
        wrong, code = mqtt_device(mqtt_port, ca, "not-the-password")
        assert code.is_failure
        wrong.loop_stop()
        device, code = mqtt_device(mqtt_port, ca, NATS_SECRETS["CITYGW_DEVICE_MQTT_PASSWORD"])
        assert not code.is_failure, str(code)
        try:
            device.publish("ingest/0/citygw/v1/WL-0001/telemetry", b"around the mapping")
            device.publish("citygw/v1/WL-0001/commands", b"not a device's topic")
            for device_id in devices:
                for leaf in ("telemetry", "status"):
                    info = device.publish(f"citygw/v1/{device_id}/{leaf}", b"{}", qos=1)
                    info.wait_for_publish(10)
        finally:
            device.disconnect()
            device.loop_stop()

    subjects = asyncio.run(stream_subjects(publish))
    assert subjects == {
        f"ingest.{partition_of(d, n)}.citygw.v1.{d}.{leaf}": 1
        for d in devices
        for leaf in ("telemetry", "status")
    }
