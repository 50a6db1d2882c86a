"""``citygw thresholds list|set|history|rollback -c CONFIG``: the operator's side of the
thresholds API (gateway/api_thresholds.py).

The settings live in the running gateway, so every command goes through its API
(gateway/api_client.py) with the address and token of the config given with ``-c``; a
change made here is applied at the gateway's next batch and recorded as a version with
``--author`` and ``--reason``. ``set`` takes ``PATH=VALUE`` pairs as the API does: the value
is sent as text and typed by the parameter it sets (``null`` removes a device's or zone's
override, ``[...]``/``{...}`` is JSON, e.g. a schedule). ``--json`` prints the API's answer.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from gateway.api_client import (
    ApiClient,
    add_api_arguments,
    format_table,
    printable,
    run_with_client,
    show,
    whole_number,
)
from gateway.threshold_versions import MAX_PAGE
from rules.settings import RuleSettings, leaves

BASE = "/api/v1/thresholds"


def register(subparsers: argparse._SubParsersAction) -> None:
    thresholds = subparsers.add_parser(
        "thresholds", help="read and change the running gateway's rule thresholds"
    )
    actions = thresholds.add_subparsers(required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="every parameter and its value now")
    listing.add_argument("prefix", nargs="?", default="", help="only paths starting so")
    add_api_arguments(listing)
    listing.set_defaults(handler=lambda args: run_with_client(args, lambda c: _list(c, args)))

    change = actions.add_parser("set", help="change parameters: a new version, applied live")
    change.add_argument("changes", nargs="+", type=_change, metavar="PATH=VALUE")
    _add_who_and_why(change)
    add_api_arguments(change)
    change.set_defaults(handler=_set_handler)

    history = actions.add_parser("history", help="versions, newest first, with what changed")
    history.add_argument("--limit", type=whole_number(1, MAX_PAGE), default=20)
    history.add_argument("--cursor", type=whole_number(1, 2**62), default=None,
                         help="continue where the previous page said")  # fmt: skip
    add_api_arguments(history)
    history.set_defaults(handler=lambda args: run_with_client(args, lambda c: _history(c, args)))

    rollback = actions.add_parser("rollback", help="a new version equal to an earlier one")
    rollback.add_argument("version", type=whole_number(1, 2**62))
    _add_who_and_why(rollback)
    add_api_arguments(rollback)
    rollback.set_defaults(handler=lambda args: run_with_client(args, lambda c: _rollback(c, args)))


def _add_who_and_why(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--author", required=True, help="who makes the change")
    parser.add_argument("--reason", required=True, help="why, for the history")
    parser.add_argument(
        "--expected-version",
        type=whole_number(1, 2**62),
        default=None,
        help="refuse if the current version is no longer this one",
    )


def _change(text: str) -> tuple[str, str | None]:
    path, equals, value = text.partition("=")
    if not equals or not path:
        raise argparse.ArgumentTypeError(f"expected PATH=VALUE, got {text!r}")
    return path, None if value == "null" else value


# -- the commands ---------------------------------------------------------------------------


def _list(client: ApiClient, args: argparse.Namespace) -> None:
    answer = client.get(BASE)
    settings = RuleSettings.model_validate(answer["settings"])
    prefix = args.prefix
    rows = [
        {"path": path, "value": value}
        for path, value in leaves(settings)
        if path.startswith(prefix) or path.startswith(f"kinds.{prefix}")
    ]
    if not args.json:
        print(_headline(answer))
    show(answer, args.json, rows, ("path", "value"))


def _set_handler(args: argparse.Namespace) -> int:
    paths = [path for path, _ in args.changes]
    twice = sorted({path for path in paths if paths.count(path) > 1})
    if twice:
        print(f"citygw: {printable(twice[0])} is given twice", file=sys.stderr)
        return 2
    return run_with_client(args, lambda client: _set(client, args))


def _set(client: ApiClient, args: argparse.Namespace) -> None:
    changes = dict(args.changes)
    body = {"changes": changes, "author": args.author, "reason": args.reason,
            "expected_version": args.expected_version}  # fmt: skip
    _show_recorded(client.put(BASE, body), args.json)


def _rollback(client: ApiClient, args: argparse.Namespace) -> None:
    body = {"version": args.version, "author": args.author, "reason": args.reason,
            "expected_version": args.expected_version}  # fmt: skip
    _show_recorded(client.post(f"{BASE}/rollback", body), args.json)


def _history(client: ApiClient, args: argparse.Namespace) -> None:
    answer = client.get(f"{BASE}/history", {"limit": args.limit, "cursor": args.cursor})
    if args.json:
        show(answer, True)
        return
    for version in answer["versions"]:
        print(_headline(version))
        for line in _diff_lines(version["diff"]):
            print(f"    {line}")
    if answer["next_cursor"] is not None:
        print(f"(more: --cursor {answer['next_cursor']})")


def _show_recorded(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        show(answer, True)
    elif not answer["changed"]:
        print(f"nothing changed: version {answer['version']} already has these values")
    else:
        print(_headline(answer))
        for line in _diff_lines(answer["diff"]):
            print(f"    {line}")


def _headline(version: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(version["created_ms"] / 1000).astimezone()
    action = version["action"]
    if version.get("rollback_to") is not None:
        action = f"rollback to v{version['rollback_to']}"
    return printable(
        f"v{version['version']}  {when.isoformat(timespec='seconds')}  {action}"
        f"  {version['author']}: {version['reason']}"
    )


def _diff_lines(changes: list[dict[str, Any]]) -> list[str]:
    rows = [{"path": c["path"], "old": c["old"], "new": c["new"]} for c in changes]
    return format_table(rows, ("path", "old", "new")).split("\n")[1:] if rows else []
