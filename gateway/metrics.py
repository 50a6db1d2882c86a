"""``/metrics`` for Prometheus, through prometheus-client.

The figures come from one place, the gateway's ``stats()`` (its runtime parts' and the
store's), read at scrape time by a collector: no part keeps a second set of counters for
Prometheus. Latencies are histograms observed where they happen, since a scrape cannot
rebuild a distribution from totals. prometheus-client writes the HELP/TYPE lines, label
escaping and number formats that scrapers expect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from case_bridge.breaker import BreakerState

HEALTH_PROBLEMS = ("offline", "battery_low", "suspect")
BREAKER_STATES = tuple(state.value for state in BreakerState)


class GatewayMetrics:
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_seconds = Histogram(
            "citygw_batch_seconds",
            "Time to decode, judge and commit one batch of telemetry",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.case_filed_seconds = Histogram(
            "citygw_case_filed_seconds",
            "From an alert's event time to the platform accepting its case command",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.registry.register(_StatsCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatsCollector(Collector):
    """Turns one ``stats()`` snapshot into metric families at each scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # families depend on the configuration: collect() at scrape time only

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        yield _counter("citygw_readings_stored", "Readings in the store", s["readings_stored"])
        yield _counter("citygw_alerts", "Alert transitions stored", s["alerts"])
        yield _counter(
            "citygw_suspect_readings",
            "Readings kept but not judged: their device was suspect",
            s["suspect_readings"],
        )
        yield _labelled(
            CounterMetricFamily, "citygw_rejected", "Messages refused, by reason", "reason",
            s["rejected"],
        )  # fmt: skip
        yield _labelled(
            GaugeMetricFamily, "citygw_outbox", "Case commands by state", "state", s["outbox"]
        )
        yield _labelled(
            CounterMetricFamily, "citygw_evidence_refused",
            "Evidence pictures left off a case, by reason", "reason", s.get("evidence_refused", {}),
        )  # fmt: skip
        yield _labelled(
            CounterMetricFamily, "citygw_evidence_uploads",
            "Evidence files for a platform that takes uploads: uploaded, sent as a link"
            " instead (linked_<reason>) or refused (refused_<reason>)", "outcome",
            s.get("evidence_uploads", {}),
        )  # fmt: skip
        events = s.get("platform_events", {})
        yield _labelled(
            CounterMetricFamily, "citygw_platform_events",
            "Status webhooks from the platform: accepted, or refused by reason", "result",
            {"accepted": events.get("accepted", 0), **events.get("refused", {})}
            if events else {},
        )  # fmt: skip
        yield _labelled(
            CounterMetricFamily, "citygw_closure_flags",
            "Cases flagged because their problem persisted at verification or closure, by"
            " case status", "status", s.get("closure_flags", {}),
        )  # fmt: skip
        restarts = {name: part["restarts"] for name, part in s["parts"].items()}
        yield _labelled(
            CounterMetricFamily, "citygw_part_restarts",
            "Restarts of a gateway part after an unforeseen error", "part", restarts,
        )  # fmt: skip
        # The parts' own figures exist once the gateway runs them (and only the configured
        # ones: no serial figures without serial ports).
        if "mqtt" in s:
            yield from _mqtt(s["mqtt"])
        if "delivery" in s:
            delivery = {k: v for k, v in s["delivery"].items() if isinstance(v, int | float)}
            yield _labelled(
                CounterMetricFamily, "citygw_delivery", "Case delivery outcomes", "result",
                delivery,
            )  # fmt: skip
            breaker = s["delivery"].get("breaker_state")
            if breaker is not None:
                yield _labelled(
                    GaugeMetricFamily, "citygw_platform_breaker_state",
                    "The platform circuit breaker's state (1 for the current one)", "state",
                    {state: int(state == breaker) for state in BREAKER_STATES},
                )  # fmt: skip
        if "health" in s:
            unhealthy = {
                problem: sum(1 for device in s["health"].values() if device[problem])
                for problem in HEALTH_PROBLEMS
            }
            yield _labelled(
                GaugeMetricFamily, "citygw_devices_unhealthy", "Devices with a problem",
                "problem", unhealthy,
            )  # fmt: skip
        if "held" in s:
            held = s["held"]
            holders = {k: held[k] for k in ("silence", "confirm", "inhibited")}
            yield _labelled(
                GaugeMetricFamily, "citygw_alerts_held", "Firing alerts filing no case now",
                "holder", holders,
            )  # fmt: skip
            yield _gauge("citygw_silences_in_force", "Silences in force", held["silences_in_force"])
        if s.get("serial"):
            yield from _serial(s["serial"])
        if "influxdb" in s:
            influx = s["influxdb"]
            yield _counter("citygw_influxdb_exported", "Readings exported", influx["exported"])
            yield _gauge("citygw_influxdb_pending", "Readings to export", influx["pending"])


def _mqtt(mqtt: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge("citygw_mqtt_connected", "1 while connected to the broker", mqtt["connected"])
    yield _counter("citygw_mqtt_received", "MQTT messages received", mqtt["received"])
    yield _counter(
        "citygw_mqtt_connect_failures", "Connections refused or failed", mqtt["connect_failures"]
    )


def _serial(ports: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    connected = GaugeMetricFamily(
        "citygw_serial_connected", "1 while a port is open", labels=["port"]
    )
    reconnects = CounterMetricFamily(
        "citygw_serial_reconnects", "Serial ports reopened", labels=["port"]
    )
    for port in ports.values():
        connected.add_metric([port["path"]], int(port["connected"]))
        reconnects.add_metric([port["path"]], port["reconnects"])
    yield connected
    yield reconnects


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))


def _labelled(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: dict[str, float],
) -> Metric:
    metric = family(name, documentation, labels=[label])
    for key, value in values.items():
        metric.add_metric([str(key)], float(value))
    return metric
