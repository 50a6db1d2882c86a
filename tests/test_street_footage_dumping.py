"""Dumped objects on real street footage, behind the real traffic, through the gateway's
camera path: every object left past the dwell files exactly one case, within the dwell
plus 10 s at 1 analysed frame/s, cleared after it is taken away; an empty zone and an
object taken away before the dwell file none — for every start offset.

Both shared clips (the avenue: far pavement with pedestrians and kerb-lane traffic in
front; the pedestrian street: walkers over a near and a far spot), two real objects cut
from the Amsterdam rubbish photos, two spots per clip (small/far ones included), two start
offsets. Each trial is its own test, named clip-spot-object-kind-offset. Detector answers
are shared across trials per composited picture (``gateway.footage_trial.CachedDetector``);
the wider matrix and its figures are ``bench/street_footage.py``.

One trial alone: ``pytest tests/test_street_footage_dumping.py -k far_shops-bags-positive-at13s``;
frame by frame (observations in the zone, standing times, alerts), the same trial:
``python bench/street_footage.py --models yolox_nano.onnx --offsets 0,13 --hold 20
--trace carcounter-far_shops-bags-positive-at13s``
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.backends import load_detector
from gateway.footage_trial import CachedDetector, TrialResult, run_trial
from simulators.footage import DEFAULT_ASSETS
from simulators.street_trial import (
    ARMCHAIR,
    BAGS,
    CARCOUNTER,
    GARBAGE,
    SOCIALDIST,
    Spot,
    StreetClip,
    StreetScene,
    Timing,
    Trial,
    judge,
    rect,
    standard_trials,
)

MODEL = DEFAULT_ASSETS / "models" / "yolox_nano.onnx"
ASSETS_PRESENT = MODEL.is_file() and all(
    (DEFAULT_ASSETS / path).exists()
    for path in (
        CARCOUNTER.video,
        SOCIALDIST.video,
        f"{GARBAGE}/{BAGS.photo}",
        f"{GARBAGE}/{ARMCHAIR.photo}",
    )
)
pytestmark = pytest.mark.skipif(
    not ASSETS_PRESENT,
    reason=f"shared test assets (clips, photos, COCO models) not at {DEFAULT_ASSETS}",
)

TIMING = Timing(dwell_s=30, clear_after_s=20, warmup_s=10, lateness_s=10)
OFFSETS = (0, 13)
# Each object at one spot of each clip, the other object at the other spot.
PLACEMENTS = {
    CARCOUNTER: ((CARCOUNTER.spots[0], BAGS), (CARCOUNTER.spots[1], ARMCHAIR)),
    SOCIALDIST: ((SOCIALDIST.spots[0], ARMCHAIR), (SOCIALDIST.spots[1], BAGS)),
}
TRIALS = [
    trial
    for clip, placements in PLACEMENTS.items()
    for spot, obj in placements
    for trial in standard_trials(clip, spot, [obj], OFFSETS, TIMING, short_objects=[obj])
]


@pytest.fixture(scope="module")
def scenes() -> dict[str, StreetScene]:
    horizon = max(t.start_offset_s + t.duration_s for t in TRIALS)
    return {clip.name: StreetScene(clip, horizon) for clip in PLACEMENTS}


@pytest.fixture(scope="module")
def detector() -> CachedDetector:
    return CachedDetector(load_detector(MODEL))


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest) -> dict[str, TrialResult]:
    """Every trial's result; at the end, the detection rate and time to detect per clip,
    written past the output capture (as ``capsys.disabled()`` does) so every run shows it."""
    results: dict[str, TrialResult] = {}
    yield results
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        for clip in PLACEMENTS:
            reporter.write_line(clip_summary(clip, results.values()))


def clip_summary(clip: StreetClip, results: Iterable[TrialResult]) -> str:
    ran = [r for r in results if r.trial.clip is clip]
    positives = [r for r in ran if r.trial.expected_cases]
    on_time = sum(r.failure(TIMING) is None for r in positives)
    false = sum(bool(r.alerts) for r in ran if not r.trial.expected_cases)
    delays = sorted(d for r in positives if (d := r.detect_s(TIMING)) is not None)
    spread = f"{delays[0]}/{statistics.median(delays):g}/{delays[-1]} s" if delays else "-"
    return (
        f"street footage {clip.name}: detected {on_time}/{len(positives)} positives, "
        f"{false} false cases in {len(ran) - len(positives)} empty/short runs, "
        f"case after the dwell min/median/max {spread}"
    )


@pytest.mark.parametrize("trial", TRIALS, ids=[t.id for t in TRIALS])
def test_a_dumped_object_files_one_case_on_time_and_nothing_else_does(
    trial: Trial,
    scenes: dict[str, StreetScene],
    detector: CachedDetector,
    outcomes: dict[str, TrialResult],
) -> None:
    result = run_trial(trial, scenes[trial.clip.name], detector, TIMING)
    outcomes[trial.id] = result
    why = result.describe(TIMING)
    if not trial.expected_cases:
        assert result.alerts == [], why
        return
    assert trial.appear_s is not None and trial.leave_s is not None
    assert [state for _, state in result.alerts] == ["firing", "cleared"], why
    (fired, _), (cleared, _) = result.alerts
    due = trial.appear_s + TIMING.dwell_s
    assert due <= fired <= due + TIMING.lateness_s, why
    assert trial.leave_s <= cleared, why


def test_passers_by_hide_the_object_where_they_stand_in_front(scenes):
    """At the avenue's far_shops spot a crowd walking in front of the bags hides most of
    them at second 3; at second 1 nobody does, and the picture names what it shows."""
    scene = scenes[CARCOUNTER.name]
    spot = CARCOUNTER.spots[0]
    crowded = scene.composite(scene.frame_index(3), BAGS, spot)
    clear = scene.composite(scene.frame_index(1), BAGS, spot)
    assert crowded.visible < 0.3 and clear.visible > 0.99
    assert clear.key == (CARCOUNTER.name, scene.size, scene.frame_index(1), BAGS, spot)


@settings(max_examples=25, deadline=None)
@given(
    x=st.floats(0.1, 0.9),
    y=st.floats(0.3, 0.98),
    width=st.integers(8, 80),
    second=st.integers(0, 60),
)
def test_pasting_changes_only_the_object_s_box_and_is_repeatable(scenes, x, y, width, second):
    scene = scenes[CARCOUNTER.name]
    spot = Spot("probe", (x, y), width, rect(0, 0, 1, 1), "")
    index = scene.frame_index(second)
    first = scene.composite(index, BAGS, spot)
    again = scene.composite(index, BAGS, spot)
    plain = scene.composite(index, None, spot)
    assert np.array_equal(first.image, again.image) and first.key == again.key
    changed = np.argwhere(np.any(first.image != plain.image, axis=2))
    assert (len(changed) > 0) == (first.key != plain.key) == (first.visible > 0)
    assert 0.0 <= first.visible <= 1.0
    if len(changed):
        w = max(2, round(width * scene.size[0] / scene.source_width))
        assert changed[:, 1].min() >= round(x * scene.size[0] - w / 2)
        assert changed[:, 1].max() < round(x * scene.size[0] - w / 2) + w
        assert changed[:, 0].max() < round(y * scene.size[1])


@settings(max_examples=40, deadline=None)
@given(x=st.floats(allow_nan=False), width=st.integers(), dwell=st.integers(-10, 2000))
def test_bad_trial_values_are_refused_by_name(x, width, dwell):
    if not 0 <= x <= 1:
        with pytest.raises(ValueError, match="bottom_centre"):
            Spot("s", (x, 0.5), 20, rect(0, 0, 1, 1), "")
    if not 4 <= width <= 4000:
        with pytest.raises(ValueError, match="width_src_px"):
            Spot("s", (0.5, 0.5), width, rect(0, 0, 1, 1), "")
    if not 10 < dwell <= 600:
        with pytest.raises(ValueError, match="dwell_s"):
            Timing(dwell_s=dwell)
    with pytest.raises(ValueError, match="appear_s"):
        Trial(CARCOUNTER, CARCOUNTER.spots[0], BAGS, "positive", 0, 20, 20, 60, 1)


POSITIVE = TRIALS[0]  # appears at 10 s, leaves at 60 s: due at 40 s, on time up to 50 s


@pytest.mark.parametrize(
    ("alerts", "verdict"),
    [
        ([(44, "firing"), (80, "cleared")], None),
        ([], "no case"),
        ([(51, "firing"), (80, "cleared")], "late case"),
        ([(39, "firing"), (80, "cleared")], "early case"),
        ([(44, "firing"), (50, "firing"), (80, "cleared")], "extra case"),
        ([(44, "firing"), (59, "cleared")], "clear"),
        ([(44, "firing")], "clear"),
    ],
)
def test_a_positive_is_judged_by_one_case_on_time_and_its_clear(alerts, verdict):
    assert POSITIVE.kind == "positive" and (POSITIVE.appear_s, POSITIVE.leave_s) == (10, 60)
    why = judge(POSITIVE, alerts, TIMING)
    assert (why.split(":")[0] if why else None) == verdict


def test_a_quiet_trial_is_judged_by_any_case():
    empty = next(t for t in TRIALS if t.kind == "empty")
    assert judge(empty, [], TIMING) is None
    assert judge(empty, [(30, "firing")], TIMING) == "false case: fired at [30] s"
