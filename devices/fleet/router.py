"""Which decoder handles a topic: our own telemetry and status first, then each fleet's
telemetry and status topics in config order; the first filter that matches wins.

One paho ``MQTTMatcher`` holds every filter, so a topic costs one trie walk however many
fleets there are (``topic_matches_sub`` builds a matcher per call), and the answer is kept
per topic: topics are per device, so the same few thousand come back all day. That cache is
bounded in bytes, not entries, and only holds topics within the length limit: junk traffic
with a new long topic per message must not grow memory.

The router is where every message enters, so the ``InputLimits`` that need no decoding
(payload size, topic length) are checked here, before any route's decoder runs; the decoders
get the limits for what only they can see (JSON depth, a device id inside the payload).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from paho.mqtt.matcher import MQTTMatcher

from devices.codec import TOPIC_FILTER, decode_telemetry
from devices.fleet.decode import decode_fleet_message
from devices.fleet.settings import FleetSettings
from devices.fleet.status import decode_fleet_status
from devices.limits import DEFAULT_LIMITS, InputLimits, message_rejection, shown
from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.status import STATUS_FILTER, DeviceStatus, decode_status
from domain import Reading

# The route cache's budget: topics' own sizes plus a dict slot each (~100 bytes). 8 MiB holds
# ~60,000 topics of a typical 30 characters; past it the cache starts afresh.
KNOWN_TOPICS_BYTES = 8 * 1024 * 1024
_SLOT_BYTES = 100


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
    def __init__(
        self, fleets: Sequence[FleetSettings] = (), *, limits: InputLimits = DEFAULT_LIMITS
    ) -> None:
        self._limits = limits
        routes = [
            Route(0, TOPIC_FILTER, "citygw", telemetry=partial(decode_telemetry, limits=limits)),
            Route(1, STATUS_FILTER, "citygw", status=partial(decode_status, limits=limits)),
        ]
        for fleet in fleets:
            decode = partial(decode_fleet_message, fleet, limits=limits)
            routes.append(Route(len(routes), fleet.topic, fleet.name, telemetry=decode))
            if fleet.status is not None:
                status = partial(decode_fleet_status, fleet.status, limits=limits)
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
        self._known_bytes = 0

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
        found = min(self._matcher.iter_match(topic), key=_order, default=None)
        if len(topic) <= self._limits.max_topic_len:
            size = sys.getsizeof(topic) + _SLOT_BYTES
            if self._known_bytes + size > KNOWN_TOPICS_BYTES:  # someone sprays topics
                self._known.clear()
                self._known_bytes = 0
            self._known[topic] = found
            self._known_bytes += size
        return found

    @property
    def known_topics_bytes(self) -> int:
        """What the route cache holds, in (estimated) bytes: for stats and tests."""
        return self._known_bytes

    def decode(
        self,
        topic: str,
        payload: bytes,
        registry: Mapping[str, Device],
        now_ms: int,
        max_future_skew_ms: int,
        retained: bool = False,
    ) -> Reading | DeviceStatus | Rejection:
        """Decode one message with the first matching route's decoder, once it is within the
        size limits."""
        too_large = message_rejection(topic, payload, self._limits)
        if too_large is not None:
            return too_large
        route = self.route(topic)
        if route is None:
            return Rejection(Reason.BAD_SCHEMA, f"no fleet handles topic {shown(topic)}")
        if route.telemetry is not None:
            return route.telemetry(topic, payload, registry, now_ms, max_future_skew_ms)
        assert route.status is not None  # every route has one of the two
        return route.status(topic, payload, registry, now_ms, retained)


def _order(route: Route) -> int:
    return route.order
