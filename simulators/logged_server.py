"""Start a server process that logs to a file, and wait until it is ready.

Readiness is what the server itself says in its log (from where this start began: restarts
append) together with what the caller can observe (its ports answer), never a sleep; a
process that exits while starting fails at once, naming its log.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def start_logged(
    args: list[str],
    log: Path,
    ready_line: bytes,
    answers: Callable[[], bool],
    what: str,
    timeout_s: float,
) -> subprocess.Popen:
    """Start ``args`` and return the process once ``log`` has a line ending with
    ``ready_line`` written since this start and ``answers()`` holds."""
    logged = log.stat().st_size if log.exists() else 0
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        if _logged_since(log, logged, ready_line) and answers():
            return proc
        time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"{what} not ready in {timeout_s} s; see {log}")


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM and wait: both servers flush what they persist before they exit."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(10)


def _logged_since(log: Path, offset: int, ready_line: bytes) -> bool:
    if not log.exists():
        return False
    with log.open("rb") as lines:
        lines.seek(offset)
        return any(line.rstrip().endswith(ready_line) for line in lines)
