"""The footage simulator: staged objects appear on real footage exactly when stated."""

from pathlib import Path

import av
import numpy as np
import pytest

from simulators.footage import (
    BUILTIN_FOOTAGE,
    DEFAULT_ASSETS,
    FootageError,
    build_footage,
    footage_truth,
    load_footage_scenario,
)

pytestmark = pytest.mark.skipif(
    not DEFAULT_ASSETS.is_dir(), reason=f"shared assets not at {DEFAULT_ASSETS}"
)


def frame_at(clip: Path, t_s: float) -> np.ndarray:
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            if frame.time >= t_s:
                return frame.to_ndarray(format="bgr24").astype(np.int16)
    raise AssertionError(f"no frame at {t_s} s")


def test_overlay_is_there_exactly_in_its_window(tmp_path):
    scenario = load_footage_scenario(BUILTIN_FOOTAGE, DEFAULT_ASSETS)
    clip = build_footage(scenario, tmp_path)
    bags = scenario.overlays[0]
    x, y = bags.at
    region = np.s_[y + 15 : y + 60, x + 20 : x + bags.width - 20]
    before, during, after = (frame_at(clip, t)[region] for t in (bags.start_s - 5, 20, 55))
    assert np.abs(during - before).mean() > 25  # the bags are drawn
    assert np.abs(after - before).mean() < 8  # and gone again
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == tuple(scenario.size)
        assert float(stream.duration * stream.time_base) == pytest.approx(60, abs=0.2)


def test_truth_lists_every_camera_for_each_staged_object():
    scenario = load_footage_scenario(BUILTIN_FOOTAGE, DEFAULT_ASSETS)
    assert footage_truth(scenario)["expected_cases"] == [
        {"label": "bags dumped on the street", "class_code": "06010", "priority": "urgent",
         "devices": ["CAM-A", "CAM-B"]}
    ]  # fmt: skip


def test_bad_scenarios_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BUILTIN_FOOTAGE.read_text(encoding="utf-8").replace('"06010"', '"6010"'))
    with pytest.raises(FootageError, match=r"overlays.0.class_code: String should match"):
        load_footage_scenario(bad, DEFAULT_ASSETS)
    with pytest.raises(FootageError, match="media not found"):
        load_footage_scenario(BUILTIN_FOOTAGE, tmp_path)
