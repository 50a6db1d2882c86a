"""One timeline for two simulators: a device fleet and footage cameras staging one story,
with one ground truth for both.

A timeline file (YAML) names a device scenario (``simulators/scenario.py``) and a footage
scenario (``simulators/footage.py``) and states the cases the gateway must file from both
together, each with its sources (device ids and camera ids)::

    name: bins_and_camera
    devices: devices.yaml            # relative to this file
    footage: footage.yaml
    gateway:                         # config sections it is designed against
      rules: {bin: {fire_for_s: 8}}
    expected:
      cases:
        - {label: .., class_code: "06042", priority: urgent, sources: [BIN-P1, CAM-POINT]}

One clock: the wall clock, counted from an origin the run picks. The footage's second t
is served at origin + t (the origin is the RTSP server's ``scenario_start``, and the gateway
stamps a live frame with the wall clock when it decodes it); the fleet's reading at offset
o carries the timestamp origin + o and is sent at origin + o, or at once when that moment
has passed (a gateway still starting gets its backlog late, never early). Footage cannot
be compressed, so the device scenario must run at time scale 1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simulators.fleet.message import Outgoing
from simulators.fleet.mqtt import AckedPublisher, parse_broker_url
from simulators.fleet.plan import plan_messages
from simulators.footage import (
    FootageError,
    FootageScenario,
    camera_zones,
    load_footage_scenario,
)
from simulators.scenario import Scenario, ScenarioError, load_scenario
from simulators.truth import write_truth
from simulators.yaml_errors import Loc, describe_problems, load_yaml_model

BUILTIN_TIMELINE = Path(__file__).parent / "scenarios" / "bins_and_camera" / "timeline.yaml"
CONNECT_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 30.0  # after the last publish: the broker on loopback acks in milliseconds


class TimelineError(ValueError):
    """A timeline that cannot be run; the message names the file, the line and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimelineCase(_Strict):
    label: str = Field(max_length=200)
    class_code: str = Field(pattern=r"^\d{5}$")
    priority: Literal["critical", "urgent", "normal", "low"]
    sources: list[str] = Field(min_length=1, max_length=100)


class TimelineExpected(_Strict):
    cases: list[TimelineCase] = Field(max_length=1000)


class TimelineSpec(_Strict):
    name: str = Field(max_length=100)
    description: str = Field("", max_length=2000)
    devices: str = Field(max_length=500)
    footage: str = Field(max_length=500)
    # The gateway config sections the story is designed against (merge families, shortened
    # holds); the gateway validates them when it loads its config.
    gateway: dict[str, Any] = Field(default_factory=dict, max_length=32)
    expected: TimelineExpected


@dataclass(frozen=True, slots=True)
class Timeline:
    spec: TimelineSpec
    path: Path
    devices: Scenario
    footage: FootageScenario


def load_timeline(path: str | Path, assets: Path) -> Timeline:
    """Load a timeline and both scenarios it names (footage media under ``assets``); every
    problem of the timeline itself is reported at once, file:line: field."""
    path = Path(path)
    spec, tree = load_yaml_model(path, TimelineSpec, "timeline", TimelineError)
    try:
        devices = load_scenario(path.parent / spec.devices)
        footage = load_footage_scenario(path.parent / spec.footage, assets)
    except (ScenarioError, FootageError) as exc:
        raise TimelineError(f"{path}: {exc}") from None
    problems = _problems(spec, devices, footage)
    if problems:
        raise TimelineError(describe_problems(str(path), "timeline", tree, problems))
    return Timeline(spec, path, devices, footage)


def _problems(
    spec: TimelineSpec, devices: Scenario, footage: FootageScenario
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    if devices.spec.time_scale != 1:
        problems.append(
            (("devices",), "the device scenario must run at time_scale 1: footage plays live")
        )
    both = sorted(devices.registry.keys() & set(footage.cameras))
    if both:
        problems.append((("footage",), f"ids both a device and a camera: {', '.join(both)}"))
    known = devices.registry.keys() | set(footage.cameras)
    for i, case in enumerate(spec.expected.cases):
        unknown = sorted(set(case.sources) - known)
        if unknown:
            problems.append(
                (
                    ("expected", "cases", i, "sources"),
                    f"neither a registered device nor a camera: {', '.join(unknown)}",
                )
            )
    return problems


def timeline_truth(timeline: Timeline, origin_ms: int) -> dict[str, Any]:
    """The ground truth of a run from ``origin_ms``: the expected cases (``devices`` are the
    sources whose evidence the case carries, as ``simulators.truth.compare_cases`` reads
    them), the device fleet's staged rejections, and what each simulator staged when, in
    epoch milliseconds on the one clock."""
    footage = timeline.footage
    duration_s = max(timeline.devices.spec.duration_s, footage.duration_s)
    return {
        "scenario": timeline.spec.name,
        "finished": False,
        "origin_ms": origin_ms,
        "event_start_ms": origin_ms,
        "event_end_ms": origin_ms + round(duration_s * 1000),
        "published": 0,
        "expected_cases": [
            {
                "label": case.label,
                "class_code": case.class_code,
                "priority": case.priority,
                "devices": sorted(case.sources),
            }
            for case in timeline.spec.expected.cases
        ],
        "expected_rejections": timeline.devices.expected_truth()["expected_rejections"],
        "staged": _staged(timeline, origin_ms),
    }


def _staged(timeline: Timeline, origin_ms: int) -> list[dict[str, Any]]:
    """Each device field change and each footage overlay on each camera, in time order."""
    staged: list[dict[str, Any]] = []
    for device_id, device in timeline.devices.spec.devices.items():
        for name, field in device.fields.items():
            staged += [
                {
                    "at_ms": origin_ms + round(change.at * 1000),
                    "source": device_id,
                    "what": name,
                    "change": change.model_dump(exclude_none=True, exclude={"at"}),
                }
                for change in field.changes
            ]
    for overlay in timeline.footage.overlays:
        staged += [
            {
                "at_ms": origin_ms + round(overlay.start_s * 1000),
                "until_ms": origin_ms + round(overlay.end_s * 1000),
                "source": camera,
                "what": overlay.label,
            }
            for camera in timeline.footage.cameras
        ]
    return sorted(staged, key=lambda event: (event["at_ms"], event["source"]))


def gateway_sections(
    timeline: Timeline,
    camera_url: Callable[[str], str],
    model: Path,
    camera_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The gateway config sections for a run: the timeline's ``gateway`` sections, with
    each footage camera (its URL from ``camera_url(camera_id)``, its zones at its place,
    plus ``camera_settings``) and the detector added to ``video``."""
    sections = dict(timeline.spec.gateway)
    sections["video"] = {
        **sections.get("video", {}),
        "cameras": [
            {
                "id": camera,
                "url": camera_url(camera),
                "zones": camera_zones(timeline.footage, camera),
                **(camera_settings or {}),
            }
            for camera in timeline.footage.cameras
        ],
        "detector": {"model": str(model)},
    }
    return sections


def run_fleet(
    broker_url: str, timeline: Timeline, origin_ms: int, truth_path: Path, seed: int = 1
) -> dict[str, Any]:
    """Publish the timeline's device fleet on the one clock from ``origin_ms``, wait until
    the broker has acknowledged all of it, and return the truth (also in ``truth_path``,
    written first with ``finished: false`` and again at the end)."""
    truth = timeline_truth(timeline, origin_ms)
    write_truth(truth_path, truth)
    messages = plan_messages(timeline.devices, seed)
    _publish_on_clock(broker_url, messages, origin_ms)
    truth["published"] = len(messages)
    truth["finished"] = True
    write_truth(truth_path, truth)
    return truth


def _publish_on_clock(broker_url: str, messages: list[Outgoing], origin_ms: int) -> None:
    """Each message when the wall clock reaches origin + its offset (at once if that has
    passed), stamped on the same clock; returns once the broker acknowledged them all."""
    publisher = AckedPublisher(
        parse_broker_url(broker_url), client_id=f"citygw-timeline-{os.getpid()}"
    )
    publisher.connect(CONNECT_TIMEOUT_S)
    try:
        for message in messages:
            delay_s = (origin_ms + message.offset_ms - _wall_ms()) / 1000
            if delay_s > 0:
                time.sleep(delay_s)
            publisher.publish(message.topic, message.payload(origin_ms, _wall_ms()))
        publisher.wait_acked(ACK_TIMEOUT_S)
    finally:
        publisher.close()


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
