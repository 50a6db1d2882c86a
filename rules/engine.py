"""The rule engine: routes each Reading to its source's rules and emits Alerts.

State lives in memory for speed and is handed to the caller as "dirty" snapshots after
each batch, so the gateway can commit it in the same transaction as the readings that
changed it: after a crash the engine resumes exactly where the committed history left it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from domain import Alert, Location, Reading
from rules.device_rules import build_rules
from rules.keyed_state import KeyedStates
from rules.params import RulesConfig
from rules.thresholds import ThresholdRule, evaluate, initial_state


@dataclass(frozen=True, slots=True)
class _Source:
    location: Location
    part_code: str
    rules: tuple[ThresholdRule, ...]


def alert_key(source_id: str, rule_id: str) -> str:
    return f"{source_id}/{rule_id}"


class RuleEngine:
    def __init__(self, config: RulesConfig) -> None:
        self._config = config
        self._sources: dict[str, _Source] = {}
        self.states = KeyedStates()

    def add_source(
        self,
        source_id: str,
        kind: str,
        location: Location,
        part_code: str = "",
        overrides: dict[str, str] | None = None,
    ) -> None:
        """Register a device; raises DeviceRuleError naming the device on bad parameters."""
        rules = build_rules(source_id, kind, part_code, overrides or {}, self._config)
        self._sources[source_id] = _Source(location, part_code, tuple(rules))

    def process(self, reading: Reading) -> list[Alert]:
        source = self._sources.get(reading.device_id)
        if source is None:
            return []
        alerts: list[Alert] = []
        for rule in source.rules:
            key = alert_key(reading.device_id, rule.rule_id)
            state = self.states.get(key, partial(initial_state, rule))
            before = repr(state)
            transition, stage = evaluate(rule, state, reading)
            if repr(state) != before:
                self.states.touch(key)
            if transition is None:
                continue
            priority = rule.stages[max(stage, 0)].priority
            alerts.append(
                Alert(
                    key=key,
                    source_id=reading.device_id,
                    rule_id=rule.rule_id,
                    state=transition,
                    class_code=rule.class_code,
                    priority=priority,
                    location=source.location,
                    ts=reading.ts,
                    values=dict(reading.values),
                    part_code=source.part_code,
                    summary=_summary(rule, reading, stage),
                )
            )
        return alerts


def _summary(rule: ThresholdRule, reading: Reading, stage: int) -> str:
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(reading.values.items()))
    if stage < 0:
        return f"{rule.rule_id} cleared ({shown})"
    level = rule.stages[stage]
    return f"{rule.rule_id} stage {stage + 1}: {rule.metric} ≥ {level.at:g} ({shown})"


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)
