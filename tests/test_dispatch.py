"""Case dispatch from data: responsible unit by class and grid (most specific row wins),
priority and deadline by class, the alert enrichment the gateway applies before incidents,
and the case body that carries them."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from case_bridge import tsv
from case_bridge.case_model import deadline_iso, evidence_body, open_case_body
from case_bridge.codes import ClassCatalog
from case_bridge.dispatch import (
    POLICY_COLUMNS,
    UNIT_COLUMNS,
    CaseDispatch,
    DispatchFileError,
    ResponsibleUnits,
    class_policies,
    class_policies_from_rows,
    load_dispatch,
)
from case_bridge.mapped_rest_settings import OPEN_CASE_SOURCES
from case_bridge.settings import DATA, CaseSettings
from case_bridge.working_time import WorkingCalendar
from domain import Alert, AlertState, CaseCommand, CommandKind, Location, Priority

SHANGHAI = ZoneInfo("Asia/Shanghai")
SETTINGS = CaseSettings(grids_file=DATA / "example_grids.geojson", fallback_unit="兜底单位")
CATALOG = ClassCatalog(SETTINGS.local_classes)
# Tuesday 1 December 2026, 17:00 in Fuzhou.
TUESDAY_1700 = int(datetime(2026, 12, 1, 17, 0, tzinfo=SHANGHAI).timestamp() * 1000)


@pytest.fixture(scope="module")
def dispatch() -> CaseDispatch:
    return load_dispatch(SETTINGS, "Asia/Shanghai")


def alert(class_code: str = "06042", priority: Priority = Priority.NORMAL, grid: str = "") -> Alert:
    return Alert(
        key="BIN-X/bin_full",
        source_id="BIN-X",
        rule_id="bin_full",
        state=AlertState.FIRING,
        class_code=class_code,
        priority=priority,
        location=Location(26.0830, 119.2950, "杨桥东路22号", grid),
        ts=TUESDAY_1700,
    )


def units(*rows: str) -> ResponsibleUnits:
    text = "\t".join(UNIT_COLUMNS) + "\n" + "\n".join(rows)
    return ResponsibleUnits.from_rows(tsv.parse(text, "units", UNIT_COLUMNS), "units")


def test_the_most_specific_unit_row_wins() -> None:
    table = units(
        "06042\t*\t区环卫处",
        "06042\t3501*\t市环卫处",
        "06042\t350102003*\t南街环卫所",
        "06042\t350102003001001\t杨桥收集点班组",
        "*\t350102*\t鼓楼区城管",
        "*\t*\t城管执法局",
    )
    assert table.unit("06042", "350102003001001") == "杨桥收集点班组"  # exact grid
    assert table.unit("06042", "350102003001002") == "南街环卫所"  # longest prefix
    assert table.unit("06042", "350199000000001") == "市环卫处"
    assert table.unit("06042", "440000000000001") == "区环卫处"  # the class's * row
    assert table.unit("06042", "") == "区环卫处"
    assert table.unit("09006", "350102001001001") == "鼓楼区城管"  # the * class's prefix row
    assert table.unit("09006", "") == "城管执法局"
    assert units("06042\t*\tX").unit("09006", "350102001001001") is None


def test_an_exact_class_beats_a_star_class_whatever_the_grid_rows(dispatch: CaseDispatch) -> None:
    table = units("06042\t*\t区环卫处", "*\t350102003001001\t街道办")
    assert table.unit("06042", "350102003001001") == "区环卫处"
    assert table.unit("06010", "350102003001001") == "街道办"
    assert dispatch.responsible_unit("99101", "350102003001001") == "兜底单位"  # fallback


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("6042\t*\tX", "units:3: class_code '6042' is not 5 digits or *"),
        ("06042\t35A*\tX", "units:3: grid '35A*' is not a 6-15 digit code, a digit prefix* or *"),
        (
            "06042\t3501\tX",
            "units:3: grid '3501' is not a 6-15 digit code, a digit prefix* or *",
        ),
        ("06042\t*\t", "units:3: no unit"),
        ("06010\t*\tY", "units:3: 06010 * is listed twice"),
        ("06042\t*", "units:3: 2 fields, expected 3"),
    ],
)
def test_unit_rows_are_refused_with_their_line(row: str, expected: str) -> None:
    with pytest.raises(tsv.TableError) as caught:
        units("06010\t*\tX", row)
    assert str(caught.value) == expected


def policies(*rows: str):
    text = "\t".join(POLICY_COLUMNS) + "\n" + "\n".join(rows)
    return class_policies_from_rows(tsv.parse(text, "policy", POLICY_COLUMNS), "policy")


def test_class_policy_rows() -> None:
    loaded = policies("06042\t紧急\t12\tno", "03005\tnormal\t24.5\tyes")
    assert (loaded["06042"].priority, loaded["06042"].deadline_h) == (Priority.URGENT, 12.0)
    assert loaded["03005"].working_hours is True and loaded["03005"].deadline_h == 24.5


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("6042\t紧急\t12\tno", "class_code '6042' is not 5 digits"),
        ("06042\t急\t12\tno", "priority '急' is not one of critical, urgent"),
        ("06042\t紧急\t0\tno", "deadline_h '0' is not a number of hours in (0, 8784]"),
        ("06042\t紧急\tnan\tno", "deadline_h 'nan' is not a number"),
        ("06042\t紧急\ttwelve\tno", "deadline_h 'twelve' is not a number"),
        ("06042\t紧急\t9000\tno", "deadline_h '9000' is not"),
        ("06042\t紧急\t12\ty", "working_hours 'y' is not yes or no"),
        ("01001\t特急\t2\tno", "01001 is listed twice"),
    ],
)
def test_class_policy_rows_are_refused_with_their_line(row: str, expected: str) -> None:
    with pytest.raises(tsv.TableError) as caught:
        policies("01001\t特急\t2\tno", row)
    assert str(caught.value).startswith("policy:3: ") and expected in str(caught.value)


def test_the_shipped_tables_name_only_known_classes_and_follow_the_citys_defaults() -> None:
    shipped = class_policies(SETTINGS.class_policy_file)
    assert set(shipped) <= set(CATALOG)
    covers = [code for code in CATALOG if code.startswith("010")]
    assert len(covers) == 21
    assert all(shipped[code].priority is Priority.CRITICAL for code in covers)
    assert all(shipped[code].deadline_h == 2 for code in covers)
    for code in ("06010", "06011", "06042", "09001", "09005", "09006"):
        assert (shipped[code].priority, shipped[code].deadline_h) == (Priority.URGENT, 12)
    rows = list(tsv.rows(SETTINGS.units_file, UNIT_COLUMNS))
    assert len(rows) == 20
    assert {klass for _, (klass, _, _) in rows} - {"*"} <= set(CATALOG)


def test_enrich_fills_an_empty_grid_and_raises_priority_to_the_class(
    dispatch: CaseDispatch,
) -> None:
    enriched = dispatch.enrich(alert())
    assert enriched.location.grid_code == "350102001001003"  # SW of the example block
    assert enriched.priority is Priority.URGENT  # 06042 is 紧急
    assert replace(enriched, location=alert().location, priority=Priority.NORMAL) == alert()


def test_enrich_keeps_the_registrys_grid_and_a_rules_higher_stage(dispatch: CaseDispatch) -> None:
    registered = alert(priority=Priority.CRITICAL, grid="350102003001001")
    assert dispatch.enrich(registered) is registered
    local = alert("99101", Priority.LOW)
    assert dispatch.enrich(local).priority is Priority.LOW  # no policy for local classes
    silent_cover = replace(alert("01001", grid="350102001001001"), merge=False)
    assert dispatch.enrich(silent_cover) is silent_cover  # a device's own problem
    outside = replace(alert("99101"), location=Location(30.0, 120.0))
    assert dispatch.enrich(outside) is outside  # no grid there, nothing to change
    no_grids = load_dispatch(CaseSettings(), "Asia/Shanghai")
    assert no_grids.enrich(alert()).location.grid_code == ""
    assert no_grids.parent_of("350102001001003") == ""
    assert dispatch.parent_of("350102001001003") == "350102001001"


def test_deadlines_by_class_priority_and_working_time(dispatch: CaseDispatch) -> None:
    at = TUESDAY_1700
    assert dispatch.deadline_iso(at, "06042", Priority.URGENT) == "2026-12-02T05:00:00+08:00"
    # A rule escalated a bin to 特急: the plain hours of 特急, not the class's 12 h.
    assert dispatch.deadline_iso(at, "06042", Priority.CRITICAL) == "2026-12-01T19:00:00+08:00"
    # 垃圾箱异常 counts 24 working hours: 30 min on Tuesday, 7.5 h on each of Wednesday to
    # Friday, the last hour on Monday.
    assert dispatch.deadline_iso(at, "03005", Priority.NORMAL) == "2026-12-07T09:30:00+08:00"
    assert dispatch.deadline_iso(at, "01001", Priority.CRITICAL) == "2026-12-01T19:00:00+08:00"
    assert dispatch.deadline_iso(at, "99101", Priority.LOW) == "2026-12-03T17:00:00+08:00"
    # A cover's silent sensor files at 一般 under the cover's class: 24 plain hours.
    assert dispatch.deadline_iso(at, "01001", Priority.NORMAL) == "2026-12-02T17:00:00+08:00"


def test_the_case_body_carries_the_dispatch(dispatch: CaseDispatch) -> None:
    seen = dispatch.enrich(alert())
    command = CaseCommand("c1", "INC-1", CommandKind.OPEN, seen, seen.priority)
    body = open_case_body(command, CATALOG, SETTINGS, dispatch)
    assert body["responsible_unit"] == "区环境卫生管理处"
    assert body["location"]["grid_code"] == "350102001001003"
    assert body["deadline"] == "2026-12-02T05:00:00+08:00"
    plain = open_case_body(command, CATALOG, SETTINGS)
    assert "responsible_unit" not in plain
    assert plain["deadline"] == deadline_iso(TUESDAY_1700, Priority.URGENT, SETTINGS)
    escalate = CaseCommand("c2", "INC-1", CommandKind.ESCALATE, seen, Priority.CRITICAL)
    assert evidence_body(escalate, SETTINGS, dispatch)["deadline"] == "2026-12-01T19:00:00+08:00"
    attach = CaseCommand("c3", "INC-1", CommandKind.ATTACH, seen, Priority.URGENT)
    assert "deadline" not in evidence_body(attach, SETTINGS, dispatch)
    assert OPEN_CASE_SOURCES.fullmatch("responsible_unit")


def test_a_bad_file_stops_the_load_naming_the_setting_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "units.tsv"
    bad.write_text("class_code\tgrid\tunit\n06042\t*\n", encoding="utf-8")
    with pytest.raises(DispatchFileError) as caught:
        load_dispatch(CaseSettings(units_file=bad), "Asia/Shanghai")
    assert str(caught.value) == f"cases.units_file: {bad}:2: 2 fields, expected 3"
    with pytest.raises(DispatchFileError, match=r"^cases\.grids_file: .*missing\.geojson: cannot"):
        load_dispatch(CaseSettings(grids_file=tmp_path / "missing.geojson"), "Asia/Shanghai")
    with pytest.raises(DispatchFileError, match=r"^cases\.calendar_file: .*unknown time zone"):
        load_dispatch(CaseSettings(), "Nowhere/City")
    with pytest.raises(DispatchFileError, match=r"^cases\.class_policy_file: .*cannot read"):
        load_dispatch(CaseSettings(class_policy_file=tmp_path / "no.tsv"), "Asia/Shanghai")


def monday_calendar(tmp_path: Path, class_hours: str, monday: str = "08:00-09:00") -> CaseSettings:
    """Settings whose calendar works ``monday`` only, and 03005 counts ``class_hours``."""
    calendar = tmp_path / "calendar.tsv"
    calendar.write_text(f"kind\tday\tperiods\nweekday\tmon\t{monday}\n", encoding="utf-8")
    policy = tmp_path / "policy.tsv"
    policy.write_text(
        "\t".join(POLICY_COLUMNS) + f"\n06042\t紧急\t12\tno\n03005\t一般\t{class_hours}\tyes\n",
        encoding="utf-8",
    )
    return CaseSettings(class_policy_file=policy, calendar_file=calendar)


def test_a_working_hours_limit_the_calendar_cannot_count_in_time_stops_the_load(
    tmp_path: Path,
) -> None:
    # An hour a week: 1785 h take 1785 weeks after the start's day (12,496 days), within
    # the 12,500 counted; 1786 h may take 12,503 days.
    settings = monday_calendar(tmp_path, "1785")
    monday_0900 = int(datetime(2026, 11, 30, 9, 0, tzinfo=SHANGHAI).timestamp() * 1000)
    loaded = load_dispatch(settings, "Asia/Shanghai")
    due = datetime(2026, 11, 30, 9, 0, tzinfo=SHANGHAI) + timedelta(weeks=1785)
    assert loaded.deadline_iso(monday_0900, "03005", Priority.NORMAL) == due.isoformat()
    # The reviewer's calendar: a minute a week cannot count a year's limit in any time.
    for hours, monday, days in (("1786", "08:00-09:00", 12503), ("8784", "08:00-08:01", 3689281)):
        settings = monday_calendar(tmp_path, hours, monday)
        with pytest.raises(DispatchFileError) as caught:
            load_dispatch(settings, "Asia/Shanghai")
        assert str(caught.value) == (
            f"cases.class_policy_file: {settings.class_policy_file}: class 03005: {hours} working"
            f" hours may need {days} days of the calendar {settings.calendar_file} to count,"
            " more than 12500: give the calendar more working periods, or the class a shorter"
            " limit or plain hours (working_hours no)"
        )


def test_a_limit_the_calendar_fails_to_count_is_filed_in_plain_hours_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Built past load_dispatch's check: the defence behind it.
    settings = monday_calendar(tmp_path, "8784", "08:00-08:01")
    calendar = WorkingCalendar.from_tsv(settings.calendar_file)
    dispatch = CaseDispatch(
        settings, units("*\t*\tX"), class_policies(settings.class_policy_file), calendar
    )
    with caplog.at_level("WARNING", logger="case_bridge.dispatch"):
        for _ in range(2):
            due = dispatch.deadline_ms(TUESDAY_1700, "03005", Priority.NORMAL)
            assert due == TUESDAY_1700 + 8784 * 3_600_000
    assert dispatch.stats == {"deadline_in_plain_hours": 2}
    assert [r.getMessage() for r in caplog.records] == [
        "class 03005: working-hours deadline counted in plain hours:"
        f" no working time within 25000 days of {TUESDAY_1700}"
    ]
    command = CaseCommand("c1", "INC-1", CommandKind.OPEN, alert("03005"), Priority.NORMAL)
    assert open_case_body(command, CATALOG, settings, dispatch)["deadline"] == (
        "2027-12-02T17:00:00+08:00"
    )


def test_relative_paths_resolve_from_the_config_files_folder(tmp_path: Path) -> None:
    relative = CaseSettings(grids_file=Path("grids.geojson"), units_file=Path("u/units.tsv"))
    resolved = relative.resolved(tmp_path)
    assert resolved.grids_file == tmp_path / "grids.geojson"
    assert resolved.units_file == tmp_path / "u" / "units.tsv"
    assert resolved.class_policy_file == DATA / "class_policy.tsv"  # shipped default stays
    assert CaseSettings().resolved(tmp_path).grids_file is None


CELLS = "* 06042 6042 350102* 350102003001001 紧急 critical 12 0 nan yes no mon 2026-10-01"
CELL = st.sampled_from([*CELLS.split(), "08:30-12:00", "weekday", "holiday", "workday", ""])
LINE = st.lists(CELL | st.text(max_size=12), min_size=0, max_size=5).map("\t".join)


@settings(max_examples=50, deadline=None)
@given(lines=st.lists(LINE, max_size=8), header=st.sampled_from(["units", "policy", "calendar"]))
def test_any_table_text_loads_or_gets_a_table_error(lines: list[str], header: str) -> None:
    columns = {
        "units": UNIT_COLUMNS,
        "policy": POLICY_COLUMNS,
        "calendar": ("kind", "day", "periods"),
    }
    text = "\t".join(columns[header]) + "\n" + "\n".join(lines)
    load = {
        "units": lambda: units(*lines),
        "policy": lambda: policies(*lines),
        "calendar": lambda: WorkingCalendar.from_text(text, "t"),
    }[header]
    try:
        load()
    except tsv.TableError as exc:
        assert re.match(r"^(units|policy|t)(:\d+)?: ", str(exc))
