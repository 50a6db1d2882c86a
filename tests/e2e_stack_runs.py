"""A stack and what a test does with it, as a part that runs side by side with the other
tests' parts of its module (tests/e2e_side_by_side.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Service, Stack


class StackRun:
    """A stack made with ``stack_kwargs`` in ``workdir``; ``run`` starts it and returns
    ``script(self)``; ``started``: the monotonic time just before the stack started.
    Simulators the script starts through ``simulator`` are stopped with
    the stack, also when the script failed before they ended."""

    def __init__(self, workdir: Path, script: Callable[[StackRun], Any], **stack_kwargs: Any):
        self.stack = Stack(workdir, **stack_kwargs)
        self._script = script
        self._simulators: list[Service] = []
        self.started = 0.0

    def simulator(self, time_scale: float | None = None) -> Service:
        """The stack's device fleet, started (``Stack.simulator``)."""
        sim = self.stack.simulator(time_scale)
        self._simulators.append(sim)
        return sim

    def run(self) -> Any:
        self.started = time.monotonic()  # before any of the stack's processes exists
        self.stack.start()
        return self._script(self)

    def stop(self) -> None:
        for sim in self._simulators:
            sim.stop()
        self.stack.stop()
