"""``citygw silences list|add|extend|remove -c CONFIG``: the operator's side of the silences
API (gateway/api_silences.py).

Silences hold alerts in the running gateway, so every command goes through its API
(gateway/api_client.py) with the address and token of the config given with ``-c``.
``add`` takes ``--match LABEL=VALUE`` (repeatable; labels: device, kind, grid, class, zone,
rule, priority, origin; every matcher must hold), ``--author`` and ``--reason``, and either
``--for`` a duration (``90m``, ``2h``, ``1d``, ``45s``) or ``--until`` a time (epoch ms or
ISO 8601 with a zone). ``--json`` prints the API's answer.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from typing import Any

from gateway.api_client import (
    ApiClient,
    ApiError,
    add_api_arguments,
    printable,
    run_with_client,
    show,
)
from rules.alerting import LABELS
from rules.silences import MAX_MS, STATUSES

BASE = "/api/v1/silences"
COLUMNS = ("id", "status", "matchers", "starts", "ends", "author", "reason")
_DURATION = re.compile(r"(\d{1,9})([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def register(subparsers: argparse._SubParsersAction) -> None:
    silences = subparsers.add_parser("silences", help="maintenance windows: hold matching alerts")
    actions = silences.add_subparsers(required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="silences, newest first")
    listing.add_argument("--status", choices=STATUSES, default=None)
    listing.add_argument("--limit", type=_whole(1, 1000), default=100)
    listing.add_argument("--cursor", type=_whole(1, 2**63 - 1), default=None,
                         help="continue where the previous page said")  # fmt: skip
    add_api_arguments(listing)
    listing.set_defaults(handler=lambda args: run_with_client(args, lambda c: _list(c, args)))

    add = actions.add_parser("add", help="silence alerts matching every --match")
    add.add_argument("--match", type=_matcher, action="append", required=True,
                     metavar="LABEL=VALUE", help=f"labels: {', '.join(LABELS)}")  # fmt: skip
    add.add_argument("--start", type=_instant_ms, default=None, help="default: now")
    _add_end_and_who(add)
    add.set_defaults(handler=lambda args: run_with_client(args, lambda c: _add(c, args)))

    extend = actions.add_parser("extend", help="move a silence's end later")
    extend.add_argument("id", type=_whole(1, 2**63 - 1))
    _add_end_and_who(extend)
    extend.set_defaults(handler=lambda args: run_with_client(args, lambda c: _extend(c, args)))

    remove = actions.add_parser("remove", help="end a silence now (kept in the history)")
    remove.add_argument("id", type=_whole(1, 2**63 - 1))
    remove.add_argument("--author", required=True, help="who removes it")
    remove.add_argument("--reason", default="", help="why")
    add_api_arguments(remove)
    remove.set_defaults(handler=lambda args: run_with_client(args, lambda c: _remove(c, args)))


def _add_end_and_who(parser: argparse.ArgumentParser) -> None:
    end = parser.add_mutually_exclusive_group(required=True)
    end.add_argument("--for", dest="duration_s", type=_duration_s, help="e.g. 90m, 2h, 1d")
    end.add_argument("--until", dest="ends_ms", type=_instant_ms, help="epoch ms or ISO 8601")
    parser.add_argument("--author", required=True, help="who silences")
    parser.add_argument("--reason", required=True, help="why, for the history")
    add_api_arguments(parser)


# -- argument types -----------------------------------------------------------------------------


def _matcher(text: str) -> tuple[str, str]:
    label, equals, value = text.partition("=")
    if not equals or label not in LABELS or not value:
        raise argparse.ArgumentTypeError(
            f"expected LABEL=VALUE with LABEL one of {', '.join(LABELS)}, got {text!r}"
        )
    return label, value


def _duration_s(text: str) -> int:
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90m, 2h or 1d: {text!r}")
    return int(match[1]) * _UNIT_S[match[2]]


def _instant_ms(text: str) -> int:
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_MS)):
        return int(text)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epoch ms or ISO 8601: {text!r}") from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone; add Z or an offset")
    return int(instant.timestamp() * 1000)


def _whole(low: int, high: int):
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and low <= int(text[:20]) <= high):
            raise argparse.ArgumentTypeError(f"expected a whole number {low} to {high}")
        return int(text)

    return parse


# -- the commands -------------------------------------------------------------------------------


def _list(client: ApiClient, args: argparse.Namespace) -> None:
    answer = client.get(BASE, {"status": args.status, "limit": args.limit,
                               "cursor": args.cursor})  # fmt: skip
    show(answer, args.json, [_row(s) for s in answer["silences"]], COLUMNS)
    if not args.json and answer["next_cursor"] is not None:
        print(f"(more: --cursor {answer['next_cursor']})")


def _add(client: ApiClient, args: argparse.Namespace) -> None:
    labels = [label for label, _ in args.match]
    twice = next((label for label in labels if labels.count(label) > 1), None)
    if twice is not None:  # a silence needs every matcher: two values of one label never hold
        raise ApiError(printable(f"--match {twice} is given twice"))
    body = {
        "matchers": dict(args.match),
        "author": args.author,
        "reason": args.reason,
        "starts_ms": args.start,
        "ends_ms": args.ends_ms,
        "duration_s": args.duration_s,
    }
    _show_one(client.post(BASE, {k: v for k, v in body.items() if v is not None}), args.json)


def _extend(client: ApiClient, args: argparse.Namespace) -> None:
    body = {"author": args.author, "reason": args.reason, "ends_ms": args.ends_ms,
            "duration_s": args.duration_s}  # fmt: skip
    answer = client.patch(f"{BASE}/{args.id}", {k: v for k, v in body.items() if v is not None})
    _show_one(answer, args.json)


def _remove(client: ApiClient, args: argparse.Namespace) -> None:
    answer = client.request("DELETE", f"{BASE}/{args.id}",
                            params={"author": args.author, "reason": args.reason})  # fmt: skip
    _show_one(answer, args.json)


def _show_one(silence: dict[str, Any], as_json: bool) -> None:
    show(silence, as_json, [_row(silence)], COLUMNS)


def _row(silence: dict[str, Any]) -> dict[str, Any]:
    matchers = " ".join(f"{k}={v}" for k, v in silence["matchers"].items())
    return {**silence, "matchers": matchers, "starts": _when(silence["starts_ms"]),
            "ends": _when(silence["ends_ms"])}  # fmt: skip


def _when(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="minutes")
    except (ValueError, OverflowError, OSError):  # beyond what this machine's clock shows
        return str(ms)
