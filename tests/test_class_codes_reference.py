"""class_codes.tsv against the GB/T 47678.5-2026 reference table (its 管理事项 rows), and
every class code a default rule, a camera zone or a dispatch table uses: each must be a
standard matter code or one of the city's local codes (99xxx in CaseSettings)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from case_bridge import tsv
from case_bridge.codes import STANDARD_TABLE, ClassCatalog
from case_bridge.dispatch import POLICY_COLUMNS, UNIT_COLUMNS
from case_bridge.settings import CaseSettings
from detectors.config import STALL_CLASS_BY_ZONE, ZoneSettings
from gateway.config import VideoSettings
from rules.params import BinParams, HealthConfig, WaterLevelParams

REFERENCE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "gbt47678-5-2026-codes.tsv"
)
SETTINGS = CaseSettings()


def table() -> list[tuple[str, str, str]]:
    rows = tsv.rows(STANDARD_TABLE, ("code", "category", "name"))
    return [(code, category, name) for _, (code, category, name) in rows]


def reference_matters() -> dict[str, tuple[str, str]]:
    """``code -> (category, name)`` of the reference's 管理事项 rows; a range row
    (``01001..01023``, ``<部件名>异常``) stands for each part code in that range."""
    if not REFERENCE.exists():
        pytest.skip(f"the reference table is not here ({REFERENCE}); it lives in ../shared")
    rows = list(tsv.rows(REFERENCE, ("kind", "code", "category", "name")))
    parts = {code: name for _, (kind, code, _, name) in rows if kind == "管理部件"}
    matters: dict[str, tuple[str, str]] = {}
    for _, (kind, code, category, name) in rows:
        if kind != "管理事项":
            continue
        if ".." in code:
            first, last = code.split("..")
            assert name.startswith("<部件名>异常"), name
            for part, part_name in parts.items():
                if first <= part <= last:
                    matters[part] = (category, f"{part_name}异常")
        else:
            matters[code] = (category, name)
    return matters


def default_codes() -> dict[str, str]:
    """Where each default class code comes from -> the code."""
    zone_rubbish = get_args(ZoneSettings.model_fields["rubbish_class"].annotation)
    codes = {
        "rules.bin.class_code": BinParams().class_code,
        "rules.water_level.class_code": WaterLevelParams().class_code,
        "rules.health.maintenance_class": HealthConfig().maintenance_class,
        "video.camera_offline_class": VideoSettings.model_fields["camera_offline_class"].default,
        **{f"zone rubbish_class {code}": code for code in zone_rubbish},
        **{f"zone {zone}": code for zone, code in STALL_CLASS_BY_ZONE.items()},
        # A cover's rule files its part's "<part>异常" matter: every 010xx code we list.
        **{f"cover {code}": code for code, _, _ in table() if code.startswith("010")},
    }
    for name, columns in (("class_policy_file", POLICY_COLUMNS), ("units_file", UNIT_COLUMNS)):
        for number, fields in tsv.rows(getattr(SETTINGS, name), columns):
            if fields[0] != "*":
                codes[f"{name}:{number}"] = fields[0]
    return codes


def test_class_codes_tsv_is_well_formed() -> None:
    rows = table()
    assert len(rows) == 34
    codes = [code for code, _, _ in rows]
    assert len(set(codes)) == len(codes) and codes == sorted(codes)
    assert all(re.fullmatch(r"[0-9]{5}", code) for code in codes)
    assert all(category.endswith("类") and name for _, category, name in rows)
    assert not any(code.startswith("99") for code in codes)  # local codes live in settings
    assert list(ClassCatalog({})) == codes


def test_every_listed_code_matches_the_reference() -> None:
    matters = reference_matters()
    assert len(matters) == 34
    differing = [(row, matters.get(row[0])) for row in table() if matters.get(row[0]) != row[1:]]
    assert differing == []


def test_every_default_rules_code_is_standard_or_local() -> None:
    codes = default_codes()
    assert len(codes) == 4 + 2 + 3 + 21 + 29 + 20  # singles, zones, covers, two tables
    local = {name: code for name, code in codes.items() if code in SETTINGS.local_classes}
    assert set(local.values()) == {"99101", "99201", "99301"}
    assert all(code.startswith("99") for code in SETTINGS.local_classes)
    matters = reference_matters()
    unknown = {name: code for name, code in codes.items() if code not in matters}
    assert unknown == local


def test_every_default_rules_code_is_in_class_codes_tsv() -> None:
    """Checked without the reference: a code we file must have a name to file it with."""
    catalog = ClassCatalog(SETTINGS.local_classes)
    assert {name: code for name, code in default_codes().items() if code not in catalog} == {}
