"""Why an incoming message was refused. Codes are stable: they are counted and shown."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    MALFORMED_JSON = "malformed_json"  # not JSON, or not strict UTF-8
    BAD_SCHEMA = "bad_schema"  # wrong shape: missing/unknown field, wrong type, bad topic
    OUT_OF_RANGE = "out_of_range"  # physically impossible value
    BAD_UNIT = "bad_unit"  # unit-tagged value in a unit the field cannot take
    UNKNOWN_DEVICE = "unknown_device"  # not in the registry
    DUPLICATE = "duplicate"  # same seq again, not newer: a replay or a redelivery
    STALE = "stale"  # older than (or as old as) a reading already applied
    FUTURE_TIMESTAMP = "future_timestamp"  # device clock far ahead of ours
    BAD_CHECKSUM = "bad_checksum"  # a serial sentence whose checksum does not match its bytes
    GARBAGE = "garbage"  # serial bytes outside any sentence: line noise, cut or overlong lines
    # Beyond a bound of ``InputLimits``: payload size, JSON depth, topic or device id length.
    TOO_LARGE = "too_large"
    # Handling the message raised an error nobody expected: the message is kept with the error
    # so that one bad message is a dead letter, never a crash loop on its redelivery.
    INTERNAL = "internal"
    # The shared store refused the message's rows for their content (a cluster's PostgreSQL,
    # gateway/replica_poison.py): kept here, so its partition goes on.
    STORE_REFUSED = "store_refused"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    device_id: str = ""
