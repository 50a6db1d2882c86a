"""Bounds on what a device may send, checked before anything is decoded.

Every message comes from outside: a broken device, a misconfigured fleet or an attacker with
a device's credentials. Without bounds one message can exhaust the parser's stack (deep
nesting), the gateway's memory (a topic per message cached forever, a 10 KB device id copied
into every dead letter) or its disk. ``MessageRouter`` refuses what exceeds these bounds as
``too_large`` before any decoder runs; the decoders hold JSON depth and device ids to them.

Also here: ``shown``, the one way a rejection quotes a value from a message, so that every
dead letter's detail is short and storable (valid UTF-8, whatever the payload held).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from devices.rejections import Reason, Rejection

# How many characters of a value a rejection's detail quotes.
SHOWN_CHARS = 40


class InputLimits(BaseModel):
    """Config (``ingest.limits``): the largest message the gateway takes from a device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Our telemetry is ~150 bytes and fleets' uplinks a few hundred; 64 KB leaves room for
    # batched or base64-wrapped payloads while a flood of large messages cannot fill memory.
    max_payload_bytes: int = Field(65_536, ge=1_024, le=16 * 1024 * 1024)
    # No format we read nests deeper than ~6 levels (LoRaWAN uplinks). 32 is far beyond any
    # real payload and far below the ~1,000 levels where Python's JSON parser gives up.
    max_json_depth: int = Field(32, ge=4, le=256)
    # Topics are per device and cached by the router: a bound keeps that cache small.
    max_topic_len: int = Field(256, ge=32, le=4_096)
    # Registry ids are short asset numbers; a longer id cannot be registered, and it is
    # copied into the dead letter of every message that carries it.
    max_device_id_len: int = Field(64, ge=8, le=1_024)


DEFAULT_LIMITS = InputLimits()


def message_rejection(topic: str, payload: bytes, limits: InputLimits) -> Rejection | None:
    """Why a message is refused before decoding (``too_large``), or None."""
    if len(payload) > limits.max_payload_bytes:
        detail = f"payload of {len(payload)} bytes is over {limits.max_payload_bytes}"
        return Rejection(Reason.TOO_LARGE, detail)
    if len(topic) > limits.max_topic_len:
        detail = f"topic of {len(topic)} characters is over {limits.max_topic_len}: {shown(topic)}"
        return Rejection(Reason.TOO_LARGE, detail)
    return None


def device_id_rejection(device_id: str, limits: InputLimits) -> Rejection | None:
    """A device id no registry can hold: too long (``too_large``) or not printable text
    (``bad_schema``: control characters, or a lone surrogate from a JSON escape that could
    not even be stored). The rejection names the id only shortened, in its detail."""
    if len(device_id) > limits.max_device_id_len:
        detail = (
            f"device id of {len(device_id)} characters is over {limits.max_device_id_len}:"
            f" {shown(device_id)}"
        )
        return Rejection(Reason.TOO_LARGE, detail)
    if not device_id.isprintable():
        return Rejection(Reason.BAD_SCHEMA, f"device id {shown(device_id)} is not printable text")
    return None


def shown(value: Any, chars: int = SHOWN_CHARS) -> str:
    """``value`` as a rejection quotes it: its repr (which escapes control characters and
    lone surrogates, so the text is storable), cut to ``chars`` characters."""
    if isinstance(value, str | bytes):
        text = repr(value[: chars + 1])
    elif isinstance(value, bool | float) or value is None:
        text = repr(value)
    elif isinstance(value, int):
        text = (
            str(value) if -(10**chars) < value < 10**chars else f"an integer of over {chars} digits"
        )
    elif isinstance(value, dict):
        text = "a JSON object"
    elif isinstance(value, list):
        text = "a JSON array"
    else:
        text = type(value).__name__
    return text if len(text) <= chars else text[: chars - 1] + "…"
