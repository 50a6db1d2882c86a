"""Loading a video scenario: YAML → validated ``Scene``, or an error naming file, line, field.

Beyond the model's own checks it verifies what only the whole scene can tell: unique ids,
cameras standing in the street, actors on it, and that ``expected_cases`` agree with the
truth computed from the projection, so a tester who moves a camera learns at load time
that a case's devices changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simulators.video.spec import Scene
from simulators.video.truth import PRIORITY, incidents
from simulators.yaml_errors import Loc, describe_problems, read_yaml

BUILTIN_VIDEO_SCENE = Path(__file__).parents[1] / "scenarios" / "video_builtin.yaml"
ACTOR_KINDS = {"pedestrian", "car", "stall", "rubbish", "tree", "litter_bin"}


class SceneError(ValueError):
    """A scenario that cannot be rendered; the message lists every problem as file:line: field."""


def load_scene(path: str | Path = BUILTIN_VIDEO_SCENE) -> Scene:
    """Read, validate and cross-check a video scenario file (the builtin one by default)."""
    path = Path(path)
    data, tree = read_yaml(path, SceneError)
    return parse_scene(data, str(path), tree)


def parse_scene(data: Any, source: str = "<scene>", tree: yaml.Node | None = None) -> Scene:
    """Validate an already-parsed mapping (tests, generated scenes) the same way."""
    try:
        scene = Scene.model_validate(data)
    except ValidationError as exc:
        problems = [(_drop_tag(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
        raise SceneError(describe_problems(source, "video scenario", tree, problems)) from None
    problems = _check_ids(scene) + _check_places(scene)
    if not problems:  # truth needs sound ids and places to be computed at all
        problems = _check_expected(scene)
    if problems:
        raise SceneError(describe_problems(source, "video scenario", tree, problems))
    return scene


def _check_ids(scene: Scene) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for section in ("cameras", "zones", "actors"):
        seen: set[str] = set()
        for i, item in enumerate(getattr(scene, section)):
            if item.id in seen:
                problems.append(((section, i, "id"), f"duplicate id {item.id!r}"))
            seen.add(item.id)
    return problems


def _check_places(scene: Scene) -> list[tuple[Loc, str]]:
    street = scene.street
    near, far = street.pavement_width_m, -(street.road_width_m + street.far_pavement_width_m)
    problems: list[tuple[Loc, str]] = []
    for i, camera in enumerate(scene.cameras):
        if not far < camera.view.y_m < near:
            problems.append(
                (("cameras", i, "view", "y_m"), f"must be between the fronts ({far:g}..{near:g})")
            )
    for i, actor in enumerate(scene.actors):
        points = getattr(actor, "path", None) or (actor.at,)
        if any(not far < y < near for _, y in points):
            field = "path" if hasattr(actor, "path") else "at"
            problems.append(
                (("actors", i, field), f"must lie in the street ({far:g} < y < {near:g})")
            )
        start = getattr(actor, "start_s", 0.0)
        if start >= scene.duration_s:
            problems.append((("actors", i, "start_s"), f"{start:g} s is past the end"))
    return problems


def _check_expected(scene: Scene) -> list[tuple[Loc, str]]:
    computed = {i.label: i for i in incidents(scene) if i.cameras}
    problems: list[tuple[Loc, str]] = []
    listed = set()
    for n, case in enumerate(scene.expected_cases):
        loc: Loc = ("expected_cases", n)
        listed.add(case.label)
        incident = computed.get(case.label)
        if incident is None:
            problems.append(
                (
                    (*loc, "label"),
                    f"{case.label!r} is no stall/rubbish that a camera sees in a zone",
                )
            )
            continue
        if case.class_code != incident.class_code:
            problems.append(
                ((*loc, "class_code"), f"{incident.zone} makes it {incident.class_code}")
            )
        if case.priority != PRIORITY:
            problems.append(((*loc, "priority"), f"video cases are filed {PRIORITY}"))
        if case.devices is not None and sorted(case.devices) != list(incident.cameras):
            problems.append(
                (
                    (*loc, "devices"),
                    f"declares {sorted(case.devices)} but the projection shows it in "
                    f"{list(incident.cameras)}",
                )
            )
    for label, incident in computed.items():
        if label not in listed:
            problems.append(
                (
                    ("expected_cases",),
                    f"{label} in {incident.zone} makes a {incident.class_code} case "
                    f"seen by {list(incident.cameras)} but is not listed",
                )
            )
    return problems


def _drop_tag(loc: Loc) -> Loc:
    """Pydantic puts the union tag in the path (actors.3.stall.end_s); YAML has no such key."""
    if len(loc) > 2 and loc[0] == "actors" and loc[2] in ACTOR_KINDS:
        return (*loc[:2], *loc[3:])
    return loc
