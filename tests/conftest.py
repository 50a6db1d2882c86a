"""Shared fixtures: a factory for the real broker + platform + gateway stack, a gateway
built but not started (its pipeline driven directly), the scripted platform fake for
in-process case bridge tests, and the outbox's SQLite file and an event loop runner for the
delivery tests (a test file with another store names its own ``conn``)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from embedded_config import write_embedded_config
from scripted_platform import ScriptedPlatformFake
from test_delivery_lookup import connect

from gateway.config import load_config
from gateway.service import Gateway

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
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """The gateway built from a real config over a real SQLite file and the builtin
    scenario's registry, not started: no broker or platform is needed to drive its
    pipeline, and every part is the one that runs live. Its commit thread stopped after."""
    built = Gateway(load_config(write_embedded_config(tmp_path)))
    yield built
    built.pipeline.close()


@pytest.fixture
def fake() -> Iterator[ScriptedPlatformFake]:
    """A ``ScriptedPlatformFake`` on a loopback port, stopped after the test."""
    with ScriptedPlatformFake() as server:
        yield server


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The outbox in a real SQLite file, schema made, closed after."""
    with contextlib.closing(connect(tmp_path / "outbox.db")) as connection:
        yield connection


@pytest.fixture
def run() -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    """Runs a coroutine to its end on one event loop kept for the whole test."""
    with asyncio.Runner() as runner:
        yield runner.run
