"""Run a scenario's device fleet against an MQTT broker and write its ground truth.

Event time is compressed: at time scale S one event second passes in 1/S real seconds. The
event clock starts ``duration`` in the past (``event_start_ms = now - duration``), so a reading
at offset o is sent at real time o/S after the start while its ts is now - duration + o: no
good reading is ever ahead of the wall clock, and the gateway's rules, which run on event
time, see the full timeline (dwell times, hold times) exactly as staged.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

from simulators.fleet.message import Outgoing
from simulators.fleet.mqtt import AckedPublisher, parse_broker_url
from simulators.fleet.plan import plan_messages
from simulators.scenario import load_scenario
from simulators.truth import write_truth

CONNECT_TIMEOUT_S = 10.0
# After the last publish: long enough for a restarted broker to come back and take the
# resent backlog, short enough that a dead broker fails the run instead of hanging it.
ACK_TIMEOUT_S = 60.0

Progress = Callable[[int, int], None]  # (messages published so far, messages in the run)


def run_device_simulation(
    broker_url: str,
    scenario_path: str,
    truth_path: str,
    time_scale: float | None = None,
    seed: int = 1,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Publish the scenario's telemetry in event-time order, wait until the broker has
    acknowledged all of it, and return the truth dict (also written to ``truth_path``)."""
    scenario = load_scenario(scenario_path)
    scale = scenario.spec.time_scale if time_scale is None else time_scale
    if scale <= 0:
        raise ValueError(f"time_scale must be positive, got {scale}")
    messages = plan_messages(scenario, seed)
    publisher = AckedPublisher(
        parse_broker_url(broker_url), client_id=f"citygw-fleet-{scenario.spec.name}-{os.getpid()}"
    )
    publisher.connect(CONNECT_TIMEOUT_S)
    try:
        event_start_ms = _wall_ms() - scenario.duration_ms
        truth = {
            "scenario": scenario.spec.name,
            "finished": False,
            "event_start_ms": event_start_ms,
            "event_end_ms": event_start_ms + scenario.duration_ms,
            "time_scale": scale,
            "published": 0,
            **scenario.expected_truth(),
        }
        write_truth(truth_path, truth)
        truth["published"] = _send_paced(publisher, messages, event_start_ms, scale, on_progress)
        publisher.wait_acked(ACK_TIMEOUT_S)
    finally:
        publisher.close()
    truth["finished"] = True
    write_truth(truth_path, truth)
    return truth


def _send_paced(
    publisher: AckedPublisher,
    messages: list[Outgoing],
    event_start_ms: int,
    scale: float,
    on_progress: Progress | None,
) -> int:
    """Send each batch of simultaneous messages when its event offset is due in real time."""
    started = time.monotonic()
    sent = 0
    for offset_ms, batch in itertools.groupby(messages, key=lambda m: m.offset_ms):
        delay = started + offset_ms / 1000 / scale - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        wall_ms = _wall_ms()
        for message in batch:
            publisher.publish(message.topic, message.payload(event_start_ms, wall_ms))
            sent += 1
        if on_progress is not None:
            on_progress(sent, len(messages))
    return sent


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
