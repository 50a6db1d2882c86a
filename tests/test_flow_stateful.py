"""Never lose or duplicate a case: a hypothesis state machine drives the real gateway
(``gateway.service.Gateway``, not started: its ``Pipeline`` on a real SQLite file, a
controlled clock) through readings, silences made / extended / removed, threshold changes
(one that switches a firing condition off), rollbacks, the release timer and crashes (a new
Gateway on the same files between any two steps).

Three checks after every step:
- **twin**: a second gateway given the same steps but never restarted has written exactly
  the same alert rows and case commands (a crash changes nothing that was committed);
- **model**: a plain model of the ``bin_overflow`` condition (fire ≥ level at once, clear
  < 60 at once) and of silences says which bins must have a case now and which must be
  held; a held alert is never bound to a case, a bin's filed alert always is;
- **book**: each bin has at most one incident (they never close here and never merge
  across bins), each incident exactly one OPEN command, the state the gate keeps agrees
  with the incident book (a filed key is bound to an open incident, a held one is not).
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from domain import Reading
from gateway import silences
from gateway.config import load_config
from gateway.service import Gateway
from rules.settings import RuleSettings
from rules.silences import Extension, NewSilence

START_MS = 1_717_380_000_000  # 2024-06-03 10:00 Asia/Shanghai
CLEAR_PCT = 60.0
# Two bins a kilometre apart in two grids: their cases never merge.
BINS = {
    "BIN-A": {"lat": "26.08300", "lon": "119.29500", "grid_code": "350102003001001"},
    "BIN-B": {"lat": "26.09200", "lon": "119.29500", "grid_code": "350102003001002"},
}
MATCHERS = [{"device": "BIN-A"}, {"device": "BIN-B"}, {"kind": "bin"}, {"rule": "bin_repeat"}]
WHO = {"author": "ops", "reason": "maintenance"}


def key(device_id: str) -> str:
    return f"{device_id}/bin_overflow"


@dataclass
class ModelSilence:
    matchers: dict[str, str]
    starts_ms: int
    ends_ms: int

    def covers(self, device_id: str, rule: str, at_ms: int) -> bool:
        labels = {"device": device_id, "kind": "bin", "rule": rule}
        held = all(labels.get(name) == value for name, value in self.matchers.items())
        return held and self.starts_ms <= at_ms < self.ends_ms


@dataclass
class Model:
    """What must be: per bin, whether its level condition fires, and whether its alert is
    held by a silence (since when it has been covered) or filed."""

    fire_pct: float = 90.0
    firing: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(BINS, False))
    held: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(BINS, False))
    filed: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(BINS, False))
    silences: dict[int, ModelSilence] = field(default_factory=dict)

    def covered_through(self, device_id: str, since_ms: int, until_ms: int) -> bool:
        """Silences cover the bin at every instant of [since, until]."""
        at = since_ms
        while at <= until_ms:
            ends = [s.ends_ms for s in self.silences.values()
                    if s.covers(device_id, "bin_overflow", at)]  # fmt: skip
            if not ends:
                return False
            at = max(ends)
        return True


def write_files(folder: Path) -> Path:
    registry = folder / "devices.csv"
    with registry.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["device_id", "kind", "lat", "lon", "address", "grid_code", "part_code"])
        for device_id, place in BINS.items():
            writer.writerow([device_id, "bin", place["lat"], place["lon"], "", place["grid_code"],
                             ""])  # fmt: skip
    config = {
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "devices": {"registry": str(registry)},
        "store": {"path": str(folder / "gateway.db")},
        "case_platform": {"url": "http://127.0.0.1:1", "token": "unused"},
        "rules": {"bin": {"fire_for_s": 0, "clear_for_s": 0, "fill_clear_pct": CLEAR_PCT}},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def open_gateway(config_path: Path, now_ms: int) -> Gateway:
    """A gateway on the files, as after a crash: it restores what was committed; the
    silences in force are those at the test's clock (the service uses the wall clock)."""
    gateway = Gateway(load_config(config_path))
    gateway.health.start(now_ms)
    for silence in silences.overlapping(gateway.conn, now_ms):
        gateway.flow.put_silence(silence)
    return gateway


class FlowMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="flow-stateful-"))
        self.now = START_MS
        self.seq = 0
        self.model = Model()
        self.paths = []
        self.gateways = []
        for name in ("crashing", "twin"):
            (self.folder / name).mkdir()
            path = write_files(self.folder / name)
            self.paths.append(path)
            self.gateways.append(open_gateway(path, self.now))

    def teardown(self) -> None:
        for gateway in getattr(self, "gateways", []):
            gateway.conn.close()
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)

    # -- what happens ---------------------------------------------------------------------

    def tick(self) -> None:
        """The service's release timer at ``now``, and the model's releases."""
        for gateway in self.gateways:
            gateway.pipeline.release_due(self.now)
        self._model_release()

    def _model_release(self) -> None:
        for device_id in BINS:
            if self.model.held[device_id] and not self.model.covered_through(
                device_id, self.held_since[device_id], self.now
            ):
                self.model.held[device_id] = False
                self.model.filed[device_id] = True

    @rule(seconds=st.sampled_from([1, 30, 300, 1800]))
    def advance(self, seconds: int) -> None:
        self.now += seconds * 1000
        self.tick()

    @rule(device_id=st.sampled_from(sorted(BINS)), fill=st.sampled_from([10.0, 70.0, 85.0, 95.0]))
    def reading(self, device_id: str, fill: float) -> None:
        self.now += 1  # the replay guard refuses a reading not later than the last
        self.tick()
        self.seq += 1
        reading = Reading(device_id, "bin", self.now, {"fill_pct": fill}, self.seq)
        for gateway in self.gateways:
            gateway.pipeline.process_decoded([("test", b"", reading)], self.now)
        model = self.model
        if not model.firing[device_id] and fill >= model.fire_pct:
            model.firing[device_id] = True
            silences = model.silences.values()
            if model.filed[device_id]:
                return  # its case is still open: it takes the new firing
            if any(s.covers(device_id, "bin_overflow", self.now) for s in silences):
                model.held[device_id] = True
                self.held_since[device_id] = self.now
            else:
                model.filed[device_id] = True
        elif model.firing[device_id] and fill < CLEAR_PCT:
            model.firing[device_id] = False
            model.held[device_id] = False  # a clear while held files nothing

    @rule(matchers=st.sampled_from(MATCHERS), minutes=st.sampled_from([1, 10, 60]))
    def silence(self, matchers: dict[str, str], minutes: int) -> None:
        request = NewSilence(matchers=matchers, duration_s=minutes * 60, **WHO)
        made = [g.silences.create(request, self.now) for g in self.gateways]
        assert made[0].id == made[1].id
        self.model.silences[made[0].id] = ModelSilence(matchers, self.now,
                                                       self.now + minutes * 60_000)  # fmt: skip
        self._model_release()

    @precondition(lambda self: self.model.silences)
    @rule(data=st.data(), minutes=st.sampled_from([5, 30]))
    def extend(self, data: st.DataObject, minutes: int) -> None:
        silence_id = data.draw(st.sampled_from(sorted(self.model.silences)))
        silence = self.model.silences[silence_id]
        ends = max(silence.ends_ms, self.now) + minutes * 60_000
        if silence.ends_ms <= self.now:
            return  # expired: the store refuses an extension
        extension = Extension(ends_ms=ends, **WHO)
        for gateway in self.gateways:
            gateway.silences.extend(silence_id, extension, self.now)
        silence.ends_ms = ends
        self._model_release()

    @precondition(lambda self: self.model.silences)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        silence_id = data.draw(st.sampled_from(sorted(self.model.silences)))
        silence = self.model.silences[silence_id]
        if silence.ends_ms <= self.now:
            return  # already ended: the store refuses
        for gateway in self.gateways:
            gateway.silences.remove(silence_id, "ops", "done", self.now)
        silence.ends_ms = max(self.now, silence.starts_ms)
        self._model_release()

    @rule(fire_pct=st.sampled_from([80.0, 90.0]), repeat=st.sampled_from([None, 2]))
    def set_thresholds(self, fire_pct: float, repeat: int | None) -> None:
        """A new level applies from the next reading; switching ``bin_repeat`` off while it
        fires retires it (it clears at its bin's next reading)."""
        changes = {"bin.fill_fire_pct": fire_pct, "bin.repeat_count": repeat}
        for gateway in self.gateways:
            gateway.threshold_versions.set(changes, "ops", "tune", None, applier(gateway))
        self.model.fire_pct = fire_pct

    @rule()
    def rollback(self) -> None:
        for gateway in self.gateways:
            gateway.threshold_versions.rollback(1, "ops", "undo", None, applier(gateway))
        self.model.fire_pct = 90.0

    @rule()
    def crash(self) -> None:
        """A new process on the same files (every step commits before it returns)."""
        self.gateways[0].conn.close()
        self.gateways[0] = open_gateway(self.paths[0], self.now)

    # -- what must hold -------------------------------------------------------------------

    @invariant()
    def the_crashing_gateway_wrote_what_its_twin_wrote(self) -> None:
        if not hasattr(self, "gateways"):
            return
        crashing, twin = (written(g) for g in self.gateways)
        assert crashing == twin

    @invariant()
    def cases_are_what_the_model_says(self) -> None:
        if not hasattr(self, "gateways"):
            return
        gateway = self.gateways[0]
        incidents = open_incidents(gateway)
        opens = [row for row in gateway.conn.execute("SELECT incident_id, kind FROM outbox")
                 if row[1] == "open"]  # fmt: skip
        assert sorted(i for i, _ in opens) == sorted(incidents)  # one OPEN per incident
        for device_id in BINS:
            mine = [i for i, keys in incidents.items()
                    if any(k.startswith(device_id + "/") for k in keys)]  # fmt: skip
            assert len(mine) <= 1, (device_id, incidents)
            bound = gateway.incidents.incident_of(key(device_id))
            held = gateway.flow.states.get(key(device_id), dict)
            if self.model.held[device_id]:
                assert bound is None, (device_id, "held but filed")
                assert str(held.get("held_by", "")).startswith("silence:"), (device_id, held)
            if self.model.filed[device_id]:
                assert bound is not None and mine == [bound], (device_id, "filed but no case")
            if not self.model.filed[device_id] and not self.model.held[device_id]:
                assert bound is None, (device_id, "a case the model does not know")

    held_since: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self.held_since = {}


def applier(gateway: Gateway) -> Callable[[RuleSettings], None]:
    """What the gateway's ``apply`` must do: reconfigure the engines, then store what that
    did to their state with the version (``Pipeline.write_states``; a no-op once
    ``Gateway.apply_settings`` ends with it)."""

    def apply(settings: RuleSettings) -> None:
        gateway.apply_settings(settings)
        gateway.pipeline.write_states(gateway.conn)

    return apply


def written(gateway: Gateway) -> tuple[list[tuple], list[tuple]]:
    """The alert rows and case commands in the store (what a crash must not change)."""
    alerts = gateway.conn.execute(
        "SELECT alert_key, state, ts, incident_id, held_by FROM alerts ORDER BY id"
    ).fetchall()
    commands = [
        (command_id, kind, json.loads(body)["alert"]["key"], json.loads(body)["alert"]["ts"])
        for command_id, kind, body in gateway.conn.execute(
            "SELECT command_id, kind, body FROM outbox ORDER BY seq"
        )
    ]
    return alerts, commands


def open_incidents(gateway: Gateway) -> dict[str, list[str]]:
    rows = gateway.conn.execute("SELECT key, value FROM state WHERE ns = 'incident'")
    return {k: json.loads(v)["alert_keys"] for k, v in rows if json.loads(v)["status"] == "open"}


FlowMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestFlow = FlowMachine.TestCase


def test_a_crash_after_a_condition_is_switched_off_and_on_does_not_bring_its_state_back():
    """Found by the machine: ``bin_repeat`` switched off forgets its counted edge, on
    again starts from nothing; a crash before the next batch loaded the edge back from
    the store, and the crashing gateway filed a repeat its twin did not."""
    machine = FlowMachine()
    try:
        machine.start()
        steps = [
            lambda: machine.set_thresholds(fire_pct=80.0, repeat=2),
            lambda: machine.reading(device_id="BIN-A", fill=85.0),
            lambda: machine.reading(device_id="BIN-A", fill=10.0),
            machine.rollback,
            lambda: machine.set_thresholds(fire_pct=80.0, repeat=2),
            machine.crash,
            lambda: machine.reading(device_id="BIN-A", fill=85.0),
        ]
        for step in steps:
            step()
            machine.the_crashing_gateway_wrote_what_its_twin_wrote()
            machine.cases_are_what_the_model_says()
        alerts, _ = written(machine.gateways[0])
        assert [row[:2] for row in alerts] == [
            ("BIN-A/bin_overflow", "firing"),
            ("BIN-A/bin_overflow", "cleared"),
            ("BIN-A/bin_overflow", "firing"),
        ]
    finally:
        machine.teardown()
