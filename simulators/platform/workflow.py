"""The 数字城管 case workflow: statuses, legal transitions and priority order.

Kept free of HTTP and SQL so the rules a real platform enforces live in one place and the
store and the API only ask this module what is allowed.
"""

from __future__ import annotations

INITIAL_STATUS = "accepted"

# Machine value → the Chinese name operators see on real platforms.
STATUS_NAMES: dict[str, str] = {
    "accepted": "受理",
    "registered": "立案",
    "dispatched": "派遣",
    "handling": "处置",
    "verifying": "核查",
    "closed": "结案",
    "void": "作废",
}

# Closed loop of the material: accept → register → dispatch → handle → verify → close,
# with 作废 (void) before handling starts and 返工 (rework) from verification.
TRANSITIONS: dict[str, frozenset[str]] = {
    "accepted": frozenset({"registered", "void"}),
    "registered": frozenset({"dispatched", "void"}),
    "dispatched": frozenset({"handling", "void"}),
    "handling": frozenset({"verifying"}),
    "verifying": frozenset({"closed", "handling"}),
    "closed": frozenset(),
    "void": frozenset(),
}

FINAL_STATUSES = frozenset({"closed", "void"})

# What a closed or void case still takes: a closure check's note (复核提示) that the problem
# was still seen when the case stood at one of CHECKED_STATUSES. Recorded on the case and in
# its history under this verb; it changes neither the status nor the priority.
CLOSURE_CHECK = "closure_check"
CLOSURE_CHECK_NAME = "复核提示"
CHECKED_STATUSES = frozenset({"verifying", *FINAL_STATUSES})

# Higher is more severe: an escalation may only move a case up this scale.
PRIORITY_RANK: dict[str, int] = {"low": 0, "normal": 1, "urgent": 2, "critical": 3}

# The verb recorded in history for each target status; verifying → handling is 返工.
_ACTIONS: dict[str, str] = {
    "registered": "register",
    "dispatched": "dispatch",
    "handling": "handle",
    "verifying": "verify",
    "closed": "close",
    "void": "void",
}

# Operators type the Chinese names; 返工 is how they say "send back to handling".
_ALIASES: dict[str, str] = {name: value for value, name in STATUS_NAMES.items()} | {
    "返工": "handling"
}


class IllegalTransition(Exception):
    """A status change the workflow does not allow (maps to HTTP 409)."""

    def __init__(self, from_status: str, to_status: str) -> None:
        super().__init__(
            f"illegal transition from {from_status} ({STATUS_NAMES[from_status]}) "
            f"to {to_status} ({STATUS_NAMES[to_status]})"
        )


class CaseClosed(Exception):
    """Evidence or escalation arrived for a case that is already closed or void, other than
    closure check notes alone (HTTP 409, whose body names the status so a client can tell
    it from any other conflict)."""

    def __init__(self, status: str) -> None:
        super().__init__(f"case is {status} ({STATUS_NAMES[status]})")
        self.status = status


def resolve_status(name: str) -> str | None:
    """Return the machine value for a machine value or Chinese name, None if unknown."""
    if name in STATUS_NAMES:
        return name
    return _ALIASES.get(name)


def check_transition(from_status: str, to_status: str) -> str:
    """Return the history action for a legal transition, raise IllegalTransition otherwise."""
    if to_status not in TRANSITIONS[from_status]:
        raise IllegalTransition(from_status, to_status)
    if from_status == "verifying" and to_status == "handling":
        return "rework"
    return _ACTIONS[to_status]


def is_more_severe(candidate: str, current: str) -> bool:
    """True when ``candidate`` priority outranks ``current``; equal or lower never escalates."""
    return PRIORITY_RANK[candidate] > PRIORITY_RANK[current]
