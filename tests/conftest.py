"""Shared fixtures: a factory for the real broker + platform + gateway stack."""

from __future__ import annotations

import pytest

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
