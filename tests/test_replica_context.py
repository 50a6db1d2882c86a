"""Which lease holds an alert key's rule state (gateway/replica_context.py ``lease_of_key``),
on a context built from a real config as a replica builds it: a device's key is its
partition's, a camera's key its camera's lease (after the desk, in camera id order), a
source no longer configured none."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from served_app import write_gateway_config

from devices.fleet import MessageRouter
from devices.nats_ingest import partition_of
from devices.registry import load_registry
from gateway.config import load_config
from gateway.replica_context import ClusterContext
from gateway.rule_settings import settings_from_files

PARTITIONS = 4
MODEL = Path(__file__).resolve().parents[1] / "models" / "citygw-street-v2.onnx"


def camera(camera_id: str) -> dict:
    zone = {"id": "Z1", "type": "no_dumping", "lat": 26.08, "lon": 119.29,
            "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 0.9]]}  # fmt: skip
    return {"id": camera_id, "url": f"rtsp://10.0.0.5:554/{camera_id}", "zones": [zone]}


def cluster_context(folder: Path) -> ClusterContext:
    path = write_gateway_config(folder, {"enabled": False})
    data = yaml.safe_load(path.read_text())
    data["cluster"] = {"postgres_dsn": "host=127.0.0.1 dbname=citygw",
                       "nats": {"partition_count": PARTITIONS}}  # fmt: skip
    data["video"] = {"cameras": [camera("CAM-B"), camera("CAM-A")],
                     "detector": {"model": str(MODEL)}}  # fmt: skip
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    config = load_config(path)
    assert config.cluster is not None
    registry = load_registry(config.devices.registry)
    return ClusterContext(
        config, config.cluster, registry, settings_from_files(config, registry),
        MessageRouter(config.devices.fleets, limits=config.ingest.limits), "replica-1",
        tuple(sorted(config.video.cameras, key=lambda c: c.id)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> ClusterContext:
    return cluster_context(tmp_path_factory.mktemp("context"))


def test_each_key_goes_to_its_device_s_partition_or_its_camera_s_lease(context):
    assert (context.desk_lease, context.lease_count) == (PARTITIONS, PARTITIONS + 3)
    leases = {lease: cam.id for lease, cam in context.camera_leases().items()}
    assert leases == {PARTITIONS + 1: "CAM-A", PARTITIONS + 2: "CAM-B"}
    assert len(context.registry) > 1
    for device_id in context.registry:
        want = partition_of(device_id, PARTITIONS)
        assert context.lease_of_key(f"{device_id}/overflow") == want
    assert context.lease_of_key("CAM-A/Z1/dumping") == PARTITIONS + 1
    assert context.lease_of_key("CAM-B/Z1/offline") == PARTITIONS + 2
    assert context.lease_of_key("CAM-B") == PARTITIONS + 2
    for gone in ("CAM-C/Z1/dumping", "GONE-1/overflow", "", "/Z1", "cam-a/Z1/dumping"):
        assert context.lease_of_key(gone) is None, gone


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_any_key_has_no_lease_or_one_of_the_cluster_s(context, key):
    lease = context.lease_of_key(key)
    assert lease is None or (0 <= lease < context.lease_count and lease != context.desk_lease)
