"""BENCHMARKS.md, one section per bench script that keeps its latest figures there."""

from __future__ import annotations

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
        doc = doc[:start] + text + ("" if end == -1 else doc[end + 1 :])
    path.write_text(doc, encoding="utf-8")
