"""BENCHMARKS.md, one section per bench script that keeps its latest figures there."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(heading: str, text: str, path: Path = BENCHMARKS) -> None:
    """Replace the section that starts with the line ``heading`` (up to the next ``## ``
    heading) with ``text``, or append ``text`` if there is no such section."""
    doc = path.read_text(encoding="utf-8")
    start = doc.find(heading + "\n")
    if start == -1:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        end = doc.find("\n## ", start + len(heading))
        rest = "" if end == -1 else "\n" + doc[end + 1 :]  # a blank line before the next
        doc = doc[:start] + text.rstrip("\n") + "\n" + rest
    path.write_text(doc, encoding="utf-8")


def write_report(heading: str, about: str, report: str, path: Path = BENCHMARKS) -> None:
    """``write_section`` in the usual form: when and on what it ran (UTC, machine, cores),
    then ``about`` (what was measured, with which settings), then ``report`` verbatim."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = f"{stamp}, {platform.machine()}, {os.cpu_count()} cores"
    write_section(heading, f"{heading}\n\n{where}; {about}\n\n```\n{report}\n```\n", path)
