"""A camera street for the end-to-end camera tests: one RTSP server serving a clip on its
camera mounts and one stack (broker, platform, gateway) watching them, driven by a
script once both cameras are online. A gateway analysing two cameras at 2 frames/s uses
a tenth of a core, so the streets of one module run side by side on the clip's timeline
(tests/e2e_side_by_side.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_side_by_side import Running, side_by_side

from simulators.rtsp_server import RtspServerProcess

from harness import Stack, free_port, wait_until


class Street:
    """An RTSP server on ``mounts`` and a stack in ``workdir`` whose video section is
    ``video(server)``; ``script(street)`` runs once both cameras are online."""

    def __init__(
        self,
        workdir: Path,
        mounts: list[str],
        video: Callable[[RtspServerProcess], dict],
        script: Callable[[Street], Any],
    ) -> None:
        self.server = RtspServerProcess(mounts, free_port(), log=workdir / "rtsp.log")
        self.stack = Stack(workdir, video=video(self.server))
        self._script = script

    def scenario_s(self) -> float:
        """Seconds into the clip's scenario now (its server's clock, kept over restarts)."""
        return time.time() - self.server.scenario_start

    def kill_streams(self) -> float:
        """SIGKILLs the RTSP server and starts it again at once, the scenario clock running
        on; returns the scenario time of the kill."""
        killed_s = self.scenario_s()
        self.server.kill()
        self.server.start()
        return killed_s

    def run(self) -> Any:
        self.server.start()
        self.stack.start()
        wait_until(self.stack.cameras_online, "both cameras online", 120, self.stack.gateway)
        return self._script(self)

    def stop(self) -> None:
        self.stack.stop()
        self.server.stop()


def streets_side_by_side(
    request: pytest.FixtureRequest,
    workdirs: pytest.TempPathFactory,
    mounts: list[str],
    video: Callable[[RtspServerProcess], dict],
    scripts: Iterable[tuple[Callable, Callable[[Street], Any]]],
) -> Iterator[dict[str, Running]]:
    """For a module fixture to yield from: a street on ``mounts`` per test of ``scripts``
    (a test and its street's script), all side by side."""

    def make(script: Callable[[Street], Any]) -> Street:
        return Street(workdirs.mktemp("street"), mounts, video, script)

    yield from side_by_side(request, scripts, make)
