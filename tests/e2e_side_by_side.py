"""End-to-end runs of one test module started at once, each on a thread of its own.

Most of an end-to-end test's time is a scenario's real seconds (a simulator at its time
scale, incidents that dwell and clear, a platform that is down for a while) in which its
processes use a few percent of a core. Run one after another, a module's tests wait
through those seconds in turn; started together, they wait through them once. Each run
is a part: ``run`` starts its own processes in its own folder and does what its test
does to them (a killed process, a restarted broker) at the times the test names, and
returns what the test asserts on; ``stop`` stops those processes. The test then takes
its part's outcome, whatever order the tests run in, and asserts the same truth it
would have asserted on a run of its own: nothing one part does reaches another.

Only the parts of the tests pytest will run are started (``-k`` picks one alone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import pytest

# Bounds the wait for a part that is still running when its test asks for its outcome;
# every wait inside a part is bounded too, so this only matters if one of them hangs.
OUTCOME_TIMEOUT_S = 600
T = TypeVar("T")


class Part(Protocol):
    def run(self) -> Any:
        """Starts the part's processes, drives them, returns what its test checks."""

    def stop(self) -> None:
        """Stops every process ``run`` started, also when ``run`` failed midway."""


class Running:
    """A part started on its thread."""

    def __init__(self, part: Part, outcome: Future) -> None:
        self.part = part
        self._outcome = outcome

    def outcome(self) -> Any:
        """What the part's ``run`` returned; its failure is raised here, in the test."""
        return self._outcome.result(OUTCOME_TIMEOUT_S)

    def stop(self) -> None:
        """Waits for ``run`` to end (well or not), then stops the part's processes; a
        ``run`` still going after ``OUTCOME_TIMEOUT_S`` is left to its thread."""
        with contextlib.suppress(TimeoutError):
            self._outcome.exception(OUTCOME_TIMEOUT_S)
        self.part.stop()


def side_by_side(
    request: pytest.FixtureRequest,
    tests: Iterable[tuple[Callable, T]],
    make: Callable[[T], Part],
) -> Iterator[dict[str, Running]]:
    """For a module fixture to yield from: ``tests`` pairs each test of ``request``'s
    module with what ``make`` makes its part from; the parts of the tests this session
    runs are made and started at once, keyed by their test's name, and all stopped at
    the end."""
    chosen = {
        item.originalname
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is request.module
    }
    parts = {test.__name__: make(recipe) for test, recipe in tests if test.__name__ in chosen}
    pool = ThreadPoolExecutor(max(1, len(parts)), thread_name_prefix="part")
    running = {name: Running(part, pool.submit(part.run)) for name, part in parts.items()}
    try:
        yield running
    finally:
        # Every part is stopped, whichever of them fails to stop; a run still hanging is
        # left to its thread rather than holding the session.
        try:
            with contextlib.ExitStack() as stops:
                for each in running.values():
                    stops.callback(each.stop)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def this_test(request: pytest.FixtureRequest, running: dict[str, Running]) -> Running:
    """The part of the test ``request`` is for."""
    return running[request.node.originalname]
