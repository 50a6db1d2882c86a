"""``/metrics`` for Prometheus, through prometheus-client.

The figures come from one place, the gateway's ``stats()`` (its runtime parts' and the
store's), read at scrape time by a collector: no part keeps a second set of counters for
Prometheus. Latencies are histograms: the gateway's own (a batch, an alert until its case
was filed) observed where they happen, the platform's kept as bucket counts by the guarded
platform (case_bridge/guarded_platform.py) and turned into a histogram here, since a scrape
cannot rebuild a distribution from totals. Ages (the outbox's oldest pending command, the
oldest reading not yet exported to InfluxDB, a camera's latest frame) are gauges in seconds
at scrape time. prometheus-client writes the HELP/TYPE lines, label escaping and number
formats that scrapers expect.

Families that belong to a part exist only while it runs and is configured (no serial
figures without serial ports, no camera figures without cameras), so a dashboard shows "no
data" rather than a zero that was never measured. Per-camera fps is the rate of
``citygw_camera_frames_analysed_total`` (read: ``..._frames_read_total``), as Prometheus
computes rates from counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from case_bridge.breaker import BreakerState
from case_bridge.guarded_platform import LATENCY_BUCKETS_S

HEALTH_PROBLEMS = ("offline", "battery_low", "suspect")
BREAKER_STATES = tuple(state.value for state in BreakerState)
# Per-camera counters: the figure in the camera's stats → the family's name and help.
CAMERA_COUNTERS = {
    "frames": ("citygw_camera_frames_read", "Frames read from the camera's stream"),
    "frames_analysed": ("citygw_camera_frames_analysed", "Frames analysed (rate: fps)"),
    "inferences": ("citygw_camera_inferences", "Frames the detector saw (others were gated)"),
    "reconnects": ("citygw_camera_reconnects", "Stream reconnections"),
}


class GatewayMetrics:
    """``stats``: the gateway's figures; ``clock``: epoch seconds, for the ages."""

    def __init__(
        self, stats: Callable[[], dict[str, Any]], clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_seconds = Histogram(
            "citygw_batch_seconds",
            "Time to decode and judge one batch of telemetry (it commits on a thread)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.case_filed_seconds = Histogram(
            "citygw_case_filed_seconds",
            "From an alert's event time to the platform accepting its case command",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.registry.register(_StatsCollector(stats, clock))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatsCollector(Collector):
    """Turns one ``stats()`` snapshot into metric families at each scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]], clock: Callable[[], float]) -> None:
        self._stats = stats
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # families depend on the configuration: collect() at scrape time only

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        now_s = self._clock()
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
        if "outbox_oldest_pending_ms" in s:
            yield _gauge(
                "citygw_outbox_oldest_pending_age_seconds",
                "Age of the oldest case command waiting to be delivered (0: none waits)",
                _age_s(s["outbox_oldest_pending_ms"], now_s),
            )
        if "incidents_open" in s:
            yield _gauge("citygw_incidents_open", "Open incidents", s["incidents_open"])
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
        access = s.get("api_access", {})
        yield _labelled(
            CounterMetricFamily, "citygw_sign_ins", "Console sign-ins by outcome", "outcome",
            access.get("sign_ins", {}),
        )  # fmt: skip
        yield _labelled(
            CounterMetricFamily, "citygw_api_refused",
            "API requests the guard refused, by reason", "reason", access.get("refused", {}),
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
        if "consume" in s:
            consume = s["consume"]
            yield _counter(
                "citygw_readings_accepted",
                "Readings accepted since start (refused ones are in citygw_rejected_total)",
                consume.get("accepted", 0),
            )
            yield _counter(
                "citygw_incidents_opened",
                "Incidents opened since start, each filing one case (the pipeline's count of"
                " open commands made; merged and attached alerts open none)",
                consume.get("incidents_opened", 0),
            )
        if "mqtt" in s:
            yield from _mqtt(s["mqtt"])
        if "delivery" in s:
            yield from _delivery(s["delivery"])
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
        if "video" in s:
            yield from _video(s["video"])
        if "influxdb" in s:
            yield from _influxdb(s["influxdb"], now_s)


def _mqtt(mqtt: dict[str, Any]) -> Iterator[Metric]:
    yield _gauge("citygw_mqtt_connected", "1 while connected to the broker", mqtt["connected"])
    yield _gauge(
        "citygw_mqtt_subscribed",
        "1 while the broker has granted the gateway's subscriptions",
        mqtt.get("subscribed", False),
    )
    yield _counter("citygw_mqtt_received", "MQTT messages received", mqtt["received"])
    yield _counter(
        "citygw_mqtt_connect_failures", "Connections refused or failed", mqtt["connect_failures"]
    )


def _delivery(delivery: dict[str, Any]) -> Iterator[Metric]:
    outcomes = {k: v for k, v in delivery.items() if isinstance(v, int | float)}
    yield _labelled(
        CounterMetricFamily, "citygw_delivery", "Case delivery outcomes", "result", outcomes
    )
    yield _counter(
        "citygw_cases_filed",
        "Cases the platform accepted since start (open commands delivered)",
        delivery.get("delivered_open", 0),
    )
    breaker = delivery.get("breaker_state")
    if breaker is not None:
        yield _labelled(
            GaugeMetricFamily, "citygw_platform_breaker_state",
            "The platform circuit breaker's state (1 for the current one)", "state",
            {state: int(state == breaker) for state in BREAKER_STATES},
        )  # fmt: skip
    calls = delivery.get("calls", {})
    latency = HistogramMetricFamily(
        "citygw_platform_call_seconds",
        "Time the case platform took to answer, per call (filing, evidence, lookups, status"
        " sync); waits for the rate limit and calls the breaker refused are not in it",
        labels=["call"],
    )
    failures = CounterMetricFamily(
        "citygw_platform_call_failures",
        "Platform calls without a usable answer, per call and kind of failure",
        labels=["call", "failure"],
    )
    for call, figures in calls.items():
        latency.add_metric([call], _cumulative(figures["buckets"]), figures["sum_s"])
        for failure, count in figures["failures"].items():
            failures.add_metric([call, failure], count)
    yield latency
    yield failures


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (the last past the highest bound) as Prometheus's cumulative
    buckets, ``+Inf`` last."""
    bounds = [*(repr(float(bound)) for bound in LATENCY_BUCKETS_S), "+Inf"]
    total, buckets = 0, []
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        buckets.append((bound, float(total)))
    return buckets


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


def _video(video: dict[str, Any]) -> Iterator[Metric]:
    """Each camera's figures (gateway/video.py) and the detection thread's totals."""
    online = GaugeMetricFamily(
        "citygw_camera_online", "1 while the camera's stream delivers frames", labels=["camera"]
    )
    counters = {
        key: CounterMetricFamily(name, documentation, labels=["camera"])
        for key, (name, documentation) in CAMERA_COUNTERS.items()
    }
    inference = CounterMetricFamily(
        "citygw_camera_inference_seconds",
        "The camera's share of detector time (a batch's time split over its frames)",
        labels=["camera"],
    )
    lag = GaugeMetricFamily(
        "citygw_camera_lag_seconds",
        "Age of the camera's latest frame when its analysis ended",
        labels=["camera"],
    )
    for camera, figures in video.get("cameras", {}).items():
        online.add_metric([camera], int(figures["status"] == "online"))
        for key, family in counters.items():
            family.add_metric([camera], figures.get(key, 0))
        inference.add_metric([camera], figures.get("inference_ms", 0) / 1000)
        if "lag_ms" in figures:
            lag.add_metric([camera], figures["lag_ms"] / 1000)
    yield online
    yield from counters.values()
    yield inference
    yield lag
    yield _counter(
        "citygw_video_frames_dropped",
        "Frames replaced by a newer one before the detection thread took them",
        video.get("frames_dropped", 0),
    )
    yield _counter(
        "citygw_video_analysis_errors",
        "Analysis passes that failed",
        video.get("analysis_errors", 0),
    )


def _influxdb(influx: dict[str, Any], now_s: float) -> Iterator[Metric]:
    yield _counter("citygw_influxdb_exported", "Readings exported", influx["exported"])
    yield _gauge("citygw_influxdb_pending", "Readings to export", influx["pending"])
    yield _gauge(
        "citygw_influxdb_export_lag_seconds",
        "Age of the oldest reading not yet exported to InfluxDB (0: none waits)",
        _age_s(influx.get("oldest_pending_ms"), now_s),
    )
    yield _labelled(
        CounterMetricFamily, "citygw_influxdb_failures", "Export attempts that failed, by reason",
        "reason", influx.get("failures", {}),
    )  # fmt: skip
    yield _counter(
        "citygw_influxdb_lost_to_retention",
        "Readings folded away by raw retention before they were exported",
        influx.get("lost_to_retention", 0),
    )


def _age_s(then_ms: int | None, now_s: float) -> float:
    """Seconds since ``then_ms``; 0 for nothing, and for a time ahead of the clock (event
    times of a device with a fast clock)."""
    return 0.0 if then_ms is None else max(0.0, now_s - then_ms / 1000)


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
