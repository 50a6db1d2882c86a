"""Shared fixtures: a factory for the real broker + platform + gateway stack, and the
scripted platform fake for in-process case bridge tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scripted_platform import ScriptedPlatformFake

from harness import Stack


@pytest.fixture
def stack(tmp_path):
    """``stack(**kwargs)`` starts a Stack in this test's folder; all are stopped after."""
    made: list[Stack] = []

    def make(**kwargs) -> Stack:
        s = Stack(tmp_path, **kwargs)
        made.append(s)
        s.start()
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def fake() -> Iterator[ScriptedPlatformFake]:
    """A ``ScriptedPlatformFake`` on a loopback port, stopped after the test."""
    with ScriptedPlatformFake() as server:
        yield server
