"""What every sensor condition (threshold, repeat, rate) offers the rule engine.

A condition is a frozen description built from the settings; its state per alert key is
plain JSON kept in ``KeyedStates``. ``step`` advances the state with one reading and says
what happened: a :class:`Transition`, or only whether the state changed, so that the
engine writes a state to the store only when it moved (most readings move nothing).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from domain import AlertState, Priority, Reading


class Transition(NamedTuple):
    state: AlertState
    priority: Priority
    detail: str  # "stage 2: level_cm ≥ 50", "cleared": the alert's summary says it


Step = Transition | bool


class Condition(Protocol):
    rule_id: str
    class_code: str

    @property
    def priority(self) -> Priority:
        """Its first grade's priority (what a clear is filed with)."""
        ...

    def initial_state(self) -> dict[str, Any]: ...

    def firing(self, state: dict[str, Any]) -> bool: ...

    def step(self, state: dict[str, Any], reading: Reading, in_force: bool) -> Step: ...
