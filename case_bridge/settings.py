"""Settings of the case bridge: deadlines, retry policy, local classes, and the dispatch
data files (grids, responsible units, class policy, working calendar; see ``dispatch.py``).
The platform's settings are in ``platform_settings``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from domain import Priority


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter (``domain.retry.Backoff``); a peer's ``Retry-After``
    wins when it is longer."""

    model_config = ConfigDict(extra="forbid")
    initial_s: float = Field(0.5, gt=0)
    max_s: float = Field(15.0, gt=0)


DATA = Path(__file__).with_name("data")


class CaseSettings(BaseModel):
    """How cases are shaped: deadline per priority (hours; local rules, Fuzhou's defaults;
    a class in ``class_policy_file`` has its own), the city's local class codes with their
    names, and the dispatch data files. The shipped files are the defaults; a relative path
    in a config file means relative to that file (``resolved``)."""

    model_config = ConfigDict(extra="forbid")
    deadlines_h: dict[Priority, float] = {
        Priority.CRITICAL: 2,
        Priority.URGENT: 12,
        Priority.NORMAL: 24,
        Priority.LOW: 48,
    }
    local_classes: dict[str, str] = {
        "99101": "道路积水",
        "99201": "视频监控设备离线",
        "99301": "物联网感知设备异常",
    }
    grids_file: Path | None = None  # GeoJSON unit grids; none: grids come from the registry
    units_file: Path = DATA / "responsible_units.tsv"
    fallback_unit: str = Field("城市管理综合执法局", min_length=1, max_length=100)
    class_policy_file: Path = DATA / "class_policy.tsv"
    calendar_file: Path = DATA / "working_calendar.tsv"

    def resolved(self, base_dir: Path) -> CaseSettings:
        """These settings with each relative data file path taken from ``base_dir`` (the
        config file's folder); absolute paths and the shipped defaults stay."""
        changes = {
            name: base_dir / path
            for name in ("grids_file", "units_file", "class_policy_file", "calendar_file")
            if (path := getattr(self, name)) is not None and not path.is_absolute()
        }
        return self.model_copy(update=changes)
