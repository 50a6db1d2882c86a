"""Which decoder handles a topic: our own telemetry and status first, then each fleet's
telemetry and status topics in config order; the first filter that matches wins.

One paho ``MQTTMatcher`` holds every filter, so a topic costs one trie walk however many
fleets there are (``topic_matches_sub`` builds a matcher per call), and the answer is kept
per topic: topics are per device, so the same few thousand come back all day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from paho.mqtt.matcher import MQTTMatcher

from devices.codec import TOPIC_FILTER, decode_telemetry
from devices.fleet.decode import decode_fleet_message
from devices.fleet.settings import FleetSettings
from devices.fleet.status import decode_fleet_status
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.status import STATUS_FILTER, DeviceStatus, decode_status
from domain import Reading

KNOWN_TOPICS_MAX = 200_000


class _Telemetry(Protocol):
    def __call__(
        self,
        topic: str,
        payload: bytes,
        registry: Mapping[str, Device],
        now_ms: int,
        max_future_skew_ms: int,
    ) -> Reading | Rejection: ...


class _Status(Protocol):
    def __call__(
        self,
        topic: str,
        payload: bytes,
        registry: Mapping[str, Device],
        now_ms: int,
        retained: bool = False,
    ) -> DeviceStatus | Rejection: ...


@dataclass(frozen=True, slots=True)
class Route:
    """One subscription filter and what decodes its messages."""

    order: int
    topic_filter: str
    source: str  # "citygw" or the fleet's name: for counters and logs
    telemetry: _Telemetry | None = None
    status: _Status | None = None


class MessageRouter:
    def __init__(self, fleets: Sequence[FleetSettings] = ()) -> None:
        routes = [
            Route(0, TOPIC_FILTER, "citygw", telemetry=decode_telemetry),
            Route(1, STATUS_FILTER, "citygw", status=decode_status),
        ]
        for fleet in fleets:
            decode = partial(decode_fleet_message, fleet)
            routes.append(Route(len(routes), fleet.topic, fleet.name, telemetry=decode))
            if fleet.status is not None:
                status = partial(decode_fleet_status, fleet.status)
                routes.append(Route(len(routes), fleet.status.topic, fleet.name, status=status))
        self.routes: tuple[Route, ...] = tuple(routes)
        filters = [r.topic_filter for r in routes]
        repeated = sorted({f for f in filters if filters.count(f) > 1})
        if repeated:
            raise ValueError(f"topic filter(s) used twice: {', '.join(repeated)}")
        self._matcher = MQTTMatcher()
        for route in routes:
            self._matcher[route.topic_filter] = route
        self._known: dict[str, Route | None] = {}

    def subscriptions(self, share_group: str | None = None) -> list[str]:
        """The filters to subscribe to; with a group, as MQTT 5 / mosquitto shared
        subscriptions so that gateway replicas split the load. Retained status messages are
        not delivered on shared subscriptions: replicas learn states as they change."""
        if share_group is None:
            return [r.topic_filter for r in self.routes]
        return [f"$share/{share_group}/{r.topic_filter}" for r in self.routes]

    def route(self, topic: str) -> Route | None:
        try:
            return self._known[topic]
        except KeyError:
            pass
        if len(self._known) >= KNOWN_TOPICS_MAX:  # bounded even if someone sprays topics
            self._known.clear()
        found = self._known[topic] = min(self._matcher.iter_match(topic), key=_order, default=None)
        return found

    def decode(
        self,
        topic: str,
        payload: bytes,
        registry: Mapping[str, Device],
        now_ms: int,
        max_future_skew_ms: int,
        retained: bool = False,
    ) -> Reading | DeviceStatus | Rejection:
        """Decode one message with the first matching route's decoder."""
        route = self.route(topic)
        if route is None:
            return Rejection(Reason.BAD_SCHEMA, f"no fleet handles topic {topic!r}")
        if route.telemetry is not None:
            return route.telemetry(topic, payload, registry, now_ms, max_future_skew_ms)
        assert route.status is not None  # every route has one of the two
        return route.status(topic, payload, registry, now_ms, retained)


def _order(route: Route) -> int:
    return route.order
