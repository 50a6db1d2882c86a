"""Shared types of the gateway, and the retry policy every room uses: the only package
every package may import."""

from domain.retry import Backoff, parse_retry_after
from domain.schedule import DEFAULT_TZ, Schedule
from domain.types import (
    Alert,
    AlertState,
    CaseCommand,
    Category,
    CommandKind,
    Location,
    Observation,
    Priority,
    Reading,
    Value,
)

__all__ = [
    "DEFAULT_TZ",
    "Alert",
    "AlertState",
    "Backoff",
    "CaseCommand",
    "Category",
    "CommandKind",
    "Location",
    "Observation",
    "Priority",
    "Reading",
    "Schedule",
    "Value",
    "parse_retry_after",
]
