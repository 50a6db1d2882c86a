"""``citygw users add|password|list -c CONFIG``: console accounts, made on the store itself.

The first admin cannot come through the API (nobody could sign in to make it), and an admin
who lost their password cannot sign in to reset it; so these commands open the gateway's
SQLite store (``store.path`` of the config) directly, which is safe beside a running gateway
(SQLite locks the file; each change is one short transaction). Everything else about users
and tokens is done through the API by an admin (gateway/api_users.py).

The password is asked twice at a prompt that does not echo, or read as one line from
standard input with ``--password-stdin`` (for scripts: ``citygw users add ops --role
admin -c gw.yaml --password-stdin < secret``); never from an argument, which ``ps`` and
shell histories show. Each change is in the audit log as done by ``cli:<OS user>``, in the
change's own transaction.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from gateway import audit, store
from gateway.principals import ROLES, Principal
from gateway.sessions import Sessions
from gateway.users import (
    UnknownUser,
    User,
    UserError,
    Users,
    check_name,
    check_password,
    hash_password,
)

if TYPE_CHECKING:
    from collections.abc import Callable


def register(subparsers: argparse._SubParsersAction) -> None:
    users = subparsers.add_parser("users", help="console accounts (first admin, lost password)")
    actions = users.add_subparsers(required=True, metavar="ACTION")

    add = actions.add_parser("add", help="a new user with a role")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    _common(add, password=True)
    add.set_defaults(handler=lambda args: _with_store(args, _add))

    password = actions.add_parser("password", help="set a user's password (ends its sessions)")
    password.add_argument("name")
    _common(password, password=True)
    password.set_defaults(handler=lambda args: _with_store(args, _password))

    listing = actions.add_parser("list", help="users, their roles and whether disabled")
    _common(listing, password=False)
    listing.set_defaults(handler=lambda args: _with_store(args, _list))


def _common(parser: argparse.ArgumentParser, password: bool) -> None:
    parser.add_argument("-c", "--config", required=True, help="the gateway's config file")
    if password:
        parser.add_argument("--password-stdin", action="store_true",
                            help="read the password as one line from standard input")  # fmt: skip
        parser.add_argument("--reason", default="", help="why, for the audit log")


def _with_store(args: argparse.Namespace, action: Callable[..., None]) -> int:
    """0 done; 1 refused (the message says why); 2 the config or store is unusable."""
    from gateway.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        conn = store.connect(config.store.path, config.store.synchronous)
    except (ConfigError, ValueError, *store.DatabaseError, OSError) as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 2
    try:
        action(Users(conn), Sessions(conn, config.api.session_lifetime_s), args)
    except (UserError, UnknownUser) as exc:
        print(f"citygw: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


def _add(users: Users, sessions: Sessions, args: argparse.Namespace) -> None:
    check_name(args.name)
    password_hash = hash_password(_new_password(args))

    def create() -> User:
        user = users.create(args.name, args.role, password_hash, audit.wall_ms())
        audit.insert(users.conn, _actor(), "user.create", f"user:{user.name}", None,
                     user.shown(), args.reason)  # fmt: skip
        return user

    user = store.in_transaction(users.conn, create)
    print(f"user {user.name} ({user.role}) added")


def _password(users: Users, sessions: Sessions, args: argparse.Namespace) -> None:
    users.get(args.name)  # unknown: said before asking for a password
    password_hash = hash_password(_new_password(args))

    def change() -> tuple[User, int]:
        user = users.set_password_hash(args.name, password_hash, audit.wall_ms())
        ended = sessions.end_all(user.id)
        audit.insert(users.conn, _actor(), "user.password", f"user:{user.name}", None,
                     {"sessions_ended": ended}, args.reason)  # fmt: skip
        return user, ended

    user, ended = store.in_transaction(users.conn, change)
    print(f"password of {user.name} set; {ended} session(s) ended")


def _list(users: Users, sessions: Sessions, args: argparse.Namespace) -> None:
    for user in users.all():
        state = "disabled" if user.disabled_ms is not None else "enabled"
        print(f"{user.name}\t{user.role}\t{state}")


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return check_password(sys.stdin.readline().rstrip("\r\n"))
    first = getpass.getpass("password: ")
    check_password(first)
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first


def _actor() -> Principal:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no user name in this container's environment
        who = "unknown"
    return Principal(f"cli:{who}"[:64], "admin", "cli")
