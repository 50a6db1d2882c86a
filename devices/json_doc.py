"""JSON payloads as the contract says: strict UTF-8, at most ``max_json_depth`` levels deep.

Encoding: ``json.loads`` on bytes guesses UTF-16 and UTF-32 from the first bytes, so a
payload in either would be accepted against the contract. The bytes are decoded strictly as
UTF-8 first. A leading UTF-8 byte order mark is skipped (RFC 8259 §8.1 lets a parser
ignore one, and Windows tools write it); any other encoding is ``malformed_json``.

Numbers: ``NaN`` and ``Infinity`` are not JSON (RFC 8259 §6) though Python's parser reads
them; they are refused here, so no value or time downstream starts out non-finite.

Depth: Python's parser recurses once per level and gives up with RecursionError near 1,000
levels, which is caught here. The explicit bound is checked on the parsed document, and only
when the payload holds more brackets than the bound: counting two bytes runs in C, walking
every document would cost the hot path. Deeper documents are ``too_large``.
"""

from __future__ import annotations

import json
from typing import Any

from devices.rejections import Reason, Rejection


def load_json(payload: bytes, max_depth: int) -> Any | Rejection:
    """The parsed document, or why the payload is not one we take."""
    try:
        doc = _DECODER.decode(payload.decode("utf-8-sig"))
    except RecursionError:
        return _too_deep(max_depth)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return Rejection(Reason.MALFORMED_JSON, f"not UTF-8 JSON: {exc}")
    if payload.count(b"[") + payload.count(b"{") > max_depth and deeper_than(doc, max_depth):
        return _too_deep(max_depth)
    return doc


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


# One decoder, built once: json.loads with options would build one per message.
_DECODER = json.JSONDecoder(parse_constant=_not_json)


def _too_deep(max_depth: int) -> Rejection:
    return Rejection(Reason.TOO_LARGE, f"JSON nested deeper than {max_depth} levels")


def deeper_than(doc: Any, max_depth: int) -> bool:
    """Whether objects and arrays nest more than ``max_depth`` levels; level by level, so
    the walk itself never recurses."""
    level, depth = [doc], 0
    while level:
        containers = [node for node in level if isinstance(node, dict | list)]
        if not containers:
            return False
        depth += 1
        if depth > max_depth:
            return True
        level = [
            child
            for node in containers
            for child in (node.values() if isinstance(node, dict) else node)
        ]
    return False
