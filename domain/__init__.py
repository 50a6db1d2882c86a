"""Shared types of the gateway: the only module every package may import."""

from domain.types import (
    Alert,
    AlertState,
    CaseCommand,
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
    "CommandKind",
    "Location",
    "Observation",
    "Priority",
    "Reading",
    "Value",
]
