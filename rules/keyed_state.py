"""Per-alert-key rule state that the gateway commits with each batch.

Every rule engine keeps its state in memory for speed and hands the changed keys to the
caller after each batch (``take_dirty``), so the state is committed in the same
transaction as the inputs that changed it; ``load_state`` puts it back after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

State = dict[str, Any]


class KeyedStates:
    def __init__(self) -> None:
        self._states: dict[str, State] = {}
        self._dirty: set[str] = set()

    def load_state(self, key: str, state: State) -> None:
        self._states[key] = state

    def get(self, key: str, initial: Callable[[], State]) -> State:
        """The key's state, created from ``initial`` the first time it is used."""
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = initial()
        return state

    def touch(self, key: str) -> None:
        """Mark the key's state as changed (to be committed)."""
        self._dirty.add(key)

    def rearm(self, keys: list[str]) -> None:
        """Forget these alerts' state (their case was closed): the next time the condition
        holds for its full hold time, a new case is filed."""
        for key in keys:
            if key in self._states:
                del self._states[key]
                self._dirty.add(key)

    def take_dirty(self) -> dict[str, State | None]:
        """Changed states since the last call; ``None`` means deleted."""
        changed = {k: self._states.get(k) for k in self._dirty}
        self._dirty.clear()
        return changed
