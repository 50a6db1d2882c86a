"""The compose stack's observability (that docker-compose accepts the file, and refuses it
without Grafana's password, is tests/test_deploy.py): every service has a healthcheck and waits for
the health of what it needs; Prometheus scrapes the gateway where it listens, with the token
file its container writes; Grafana's provisioned data sources are the ones the dashboard
uses, and its InfluxDB queries ask for what the gateway writes there. That the dashboard's
Prometheus queries name metrics a running gateway exports is in
tests/test_e2e_observability.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.influx_sink import MEASUREMENT

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "citygw.json"
METRIC_NAME = re.compile(r"\bcitygw_[a-z0-9_]+")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) for every query of every panel."""
    return [
        (panel["title"], target) for panel in board["panels"] for target in panel.get("targets", [])
    ]


def dashboard_metric_names(board: dict[str, Any]) -> set[str]:
    """Every ``citygw_*`` series name the dashboard's PromQL asks for."""
    return {
        name
        for _, target in dashboard_targets(board)
        if target["datasource"]["type"] == "prometheus"
        for name in METRIC_NAME.findall(target["expr"])
    }


def datasources() -> dict[str, dict[str, Any]]:
    path = GRAFANA / "provisioning" / "datasources" / "citygw.yaml"
    return {ds["uid"]: ds for ds in yaml.safe_load(path.read_text("utf-8"))["datasources"]}


def test_every_service_has_a_healthcheck_and_waits_for_the_health_of_what_it_needs():
    services = compose()["services"]
    assert {"grafana", "prometheus"} <= set(services)
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, (name, key)
        needs = service.get("depends_on", {})
        for needed, condition in needs.items() if isinstance(needs, dict) else []:
            assert condition == {"condition": "service_healthy"}, (name, needed)
            assert "healthcheck" in services[needed], (name, needed)
    assert set(services["gateway"]["depends_on"]) == {"mosquitto", "platform", "influxdb"}
    assert set(services["grafana"]["depends_on"]) == {"prometheus", "influxdb"}
    # The gateway is healthy when ready for traffic (gateway/api_health.py), the broker when
    # it answers MQTT (a refused CONNECT is exit 5; nothing listening is 1).
    assert "http://127.0.0.1:8080/readyz" in " ".join(services["gateway"]["healthcheck"]["test"])
    assert "[ $$? -eq 5 ]" in services["mosquitto"]["healthcheck"]["test"][1]


def test_prometheus_scrapes_the_gateway_where_it_listens_with_the_token_file_it_is_given():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text("utf-8"))
    [job] = config["scrape_configs"]
    gateway = yaml.safe_load((ROOT / "deploy" / "gateway.yaml").read_text("utf-8"))
    assert job["static_configs"] == [{"targets": [f"gateway:{gateway['api']['port']}"]}]
    assert job["metrics_path"] == "/metrics"
    token_file = job["authorization"]["credentials_file"]
    prometheus = compose()["services"]["prometheus"]
    [script] = prometheus["entrypoint"][2:]
    assert f'"$$CITYGW_API_TOKEN" > {token_file} ' in script  # written at start...
    assert str(Path(token_file).parent) in prometheus["tmpfs"]  # ...to memory only
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in script
    sources = datasources()
    assert sources["citygw-prometheus"]["url"] == "http://prometheus:9090"
    interval = sources["citygw-prometheus"]["jsonData"]["timeInterval"]
    assert interval == config["global"]["scrape_interval"]


def test_grafana_mounts_the_provisioning_and_the_dashboard_uses_only_provisioned_sources():
    grafana = compose()["services"]["grafana"]
    mounts = dict(volume.removesuffix(":ro").split(":", 1) for volume in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "citygw.yaml").read_text())
    [dashboards] = provider["providers"]
    assert mounts["./deploy/grafana/dashboards"] == dashboards["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards['options']['path']}/{DASHBOARD.name}"
    board = dashboard()
    sources = datasources()
    used = {target["datasource"]["uid"] for _, target in dashboard_targets(board)}
    used |= {panel["datasource"]["uid"] for panel in board["panels"] if "datasource" in panel}
    used |= {variable["datasource"]["uid"] for variable in board["templating"]["list"]}
    assert used == set(sources)
    for _, target in dashboard_targets(board):
        assert sources[target["datasource"]["uid"]]["type"] == target["datasource"]["type"]


def test_the_telemetry_panels_ask_influxdb_for_what_the_gateway_writes_there():
    """Bucket, org and token are the ones the compose file sets up and the gateway writes
    with; the measurement and the ``kind`` tag are gateway/influx_sink.py's."""
    services = compose()["services"]
    init = services["influxdb"]["environment"]
    influx = datasources()["citygw-influxdb"]
    exported = yaml.safe_load((ROOT / "deploy" / "gateway.yaml").read_text("utf-8"))
    exported = exported["history"]["influxdb"]
    assert influx["url"] == exported["url"] == "http://influxdb:8086"
    bucket, org = init["DOCKER_INFLUXDB_INIT_BUCKET"], init["DOCKER_INFLUXDB_INIT_ORG"]
    assert (influx["jsonData"]["defaultBucket"], influx["jsonData"]["organization"]) == (
        bucket, org,
    )  # fmt: skip
    assert (exported["bucket"], exported["org"]) == (bucket, org)
    assert influx["secureJsonData"]["token"] == "$CITYGW_INFLUX_TOKEN"
    assert "CITYGW_INFLUX_TOKEN" in services["grafana"]["environment"]
    board = dashboard()
    flux = [
        t["query"] for _, t in dashboard_targets(board) if t["datasource"]["type"] == "influxdb"
    ]
    assert flux, "no telemetry panel"
    for query in flux:
        assert f'from(bucket: "{bucket}")' in query
        assert f'r._measurement == "{MEASUREMENT}"' in query
        assert 'r.kind == "${kind}"' in query
    [kind] = board["templating"]["list"]
    assert f'schema.tagValues(bucket: "{bucket}", tag: "kind")' in kind["query"]
    telemetry = [p for p in board["panels"] if p.get("repeat") == "kind"]
    assert len(telemetry) == 1  # one panel per device kind, repeated by Grafana


def test_every_dashboard_panel_has_a_query_and_a_unique_id():
    board = dashboard()
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert all(p.get("targets") for p in panels)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard_metric_names(board)  # the gateway's metrics are on it
