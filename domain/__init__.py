"""Shared types of the gateway: the only module every package may import."""

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
    "Alert",
    "AlertState",
    "CaseCommand",
    "Category",
    "CommandKind",
    "Location",
    "Observation",
    "Priority",
    "Reading",
    "Value",
]
