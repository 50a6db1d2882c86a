"""Ground truth: what a simulation staged, and how the cases actually filed compare with it.

The truth file is JSON written by the fleet runner (``write_truth``); a test, a benchmark or
``citygw demo`` reads it back and compares it with the case platform's cases. Cases match
exactly, as multisets of (class code, priority, devices): a case that lists one device too
few is both a missing expected case and an extra filed one, because that is what it is.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def write_truth(path: str | Path, truth: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(truth, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class CaseKey:
    """What makes two cases the same outcome: class, final priority, the devices behind it."""

    class_code: str
    priority: str
    devices: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.class_code:<6} {self.priority:<8} {', '.join(self.devices)}"


@dataclass(frozen=True, slots=True)
class Match:
    label: str
    case_id: str
    key: CaseKey


@dataclass(slots=True)
class TruthReport:
    matched: list[Match] = field(default_factory=list)
    missing: list[tuple[str, CaseKey]] = field(default_factory=list)  # (label, key)
    extra: list[tuple[str, CaseKey]] = field(default_factory=list)  # (case id, key)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra

    def render(self) -> str:
        """One line per expected and per unexpected case, then a verdict."""
        lines = [f"{'':8} {'expected / filed':<28} {'class':<6} {'priority':<8} devices"]
        lines += [
            f"{'ok':<8} {m.label[:28]:<28} {m.key}  -> case {m.case_id}" for m in self.matched
        ]
        lines += [f"{'MISSING':<8} {label[:28]:<28} {key}" for label, key in self.missing]
        lines += [f"{'EXTRA':<8} {'case ' + cid:<28} {key}" for cid, key in self.extra]
        expected = len(self.matched) + len(self.missing)
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(
            f"{verdict}: {len(self.matched)}/{expected} expected cases filed exactly, "
            f"{len(self.missing)} missing, {len(self.extra)} extra"
        )
        return "\n".join(lines)


def case_key(case: dict[str, Any]) -> CaseKey:
    """The key of a case as the case platform returns it (devices = its evidence sources)."""
    devices = sorted({e["source_id"] for e in case.get("evidence") or [] if e.get("source_id")})
    return CaseKey(str(case["class_code"]), str(case["priority"]), tuple(devices))


def compare_cases(truth: dict[str, Any], cases: list[dict[str, Any]]) -> TruthReport:
    """Match filed cases against the expected ones, exactly and one to one."""
    report = TruthReport()
    unclaimed = [(str(case.get("id", "?")), case_key(case)) for case in cases]
    for expected in truth["expected_cases"]:
        key = CaseKey(
            expected["class_code"], expected["priority"], tuple(sorted(expected["devices"]))
        )
        hit = next((i for i, (_, k) in enumerate(unclaimed) if k == key), None)
        if hit is None:
            report.missing.append((expected["label"], key))
        else:
            case_id, _ = unclaimed.pop(hit)
            report.matched.append(Match(expected["label"], case_id, key))
    report.extra = unclaimed
    return report


def compare_rejections(truth: dict[str, Any], counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Reasons whose counted rejections differ from the staged ones: reason -> (expected,
    counted). Empty when they all agree; a reason absent on either side counts as zero."""
    expected = Counter(truth["expected_rejections"])
    counted = Counter(counts)
    return {
        reason: (expected[reason], counted[reason])
        for reason in sorted(expected.keys() | counted.keys())
        if expected[reason] != counted[reason]
    }
