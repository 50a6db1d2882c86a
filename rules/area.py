"""Area (parent) conditions: many alerts of one kind in one area are one bigger problem.

Which firing alerts are members of which group, counted per :class:`AreaCondition` and its
``group_by`` label values; and the parent alert a group makes. The alert flow owns when a
parent fires and clears (it holds the firing alerts); this module only counts. Membership
is rebuilt from the flow's persisted firing alerts after a restart, so it keeps no state
of its own to commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import quote

from domain import Alert, AlertState
from rules.alerting import AreaCondition, matches

AREA_KIND = "area"
Group = tuple[str, tuple[str, ...]]  # (condition name, group_by values)


def parent_key(group: Group) -> str:
    """The parent alert's key: ``area/<condition>/<value>[/<value>...]``, values quoted so
    that two groups never share a key."""
    name, values = group
    return "/".join(["area", name, *(quote(v, safe="") for v in values)])


class AreaGroups:
    def __init__(self, conditions: Sequence[AreaCondition]) -> None:
        self._conditions = {c.name: c for c in conditions}
        self._members: dict[Group, set[str]] = {}
        self._groups_of: dict[str, list[Group]] = {}

    def groups_for(self, alert: Alert) -> list[Group]:
        """The groups ``alert`` counts in (none for a parent, or a member whose grouping
        label is empty)."""
        if alert.kind == AREA_KIND:
            return []
        labels = alert.labels
        found = []
        for condition in self._conditions.values():
            if not matches(condition.match, labels):
                continue
            values = tuple(labels[name] for name in condition.group_by)
            if all(values):
                found.append((condition.name, values))
        return found

    def join(self, alert: Alert) -> list[Group]:
        """Count ``alert`` as firing; the groups it joined that now have enough members."""
        if alert.key in self._groups_of:
            return []
        groups = self.groups_for(alert)
        if not groups:
            return []
        self._groups_of[alert.key] = groups
        full = []
        for group in groups:
            members = self._members.setdefault(group, set())
            members.add(alert.key)
            if len(members) >= self._conditions[group[0]].min_count:
                full.append(group)
        return full

    def leave(self, key: str) -> list[Group]:
        """``key`` no longer fires; the groups it left that now have too few members."""
        short = []
        for group in self._groups_of.pop(key, []):
            members = self._members[group]
            members.discard(key)
            if len(members) < self._conditions[group[0]].min_count:
                short.append(group)
            if not members:
                del self._members[group]
        return short

    def is_member(self, key: str) -> bool:
        return key in self._groups_of

    def count(self, group: Group) -> int:
        return len(self._members.get(group, ()))

    def parent(self, group: Group, member: Alert) -> Alert:
        """The firing parent alert of ``group``, made when ``member`` filled it."""
        condition = self._conditions[group[0]]
        values = dict(zip(condition.group_by, group[1], strict=True))
        grid = values.get("grid", member.location.grid_code)
        where = ", ".join(f"{name}={value}" for name, value in values.items())
        count = self.count(group)
        return Alert(
            key=parent_key(group),
            source_id=parent_key(group),
            rule_id=condition.name,
            state=AlertState.FIRING,
            class_code=condition.class_code,
            priority=condition.priority,
            location=replace(member.location, grid_code=grid),
            ts=member.ts,
            values={"count": count},
            summary=f"{condition.name}: {count} alerts firing at {where}",
            origin=member.origin,
            merge=False,
            kind=AREA_KIND,
        )
