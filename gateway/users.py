"""People who sign in to the console: a name, a role, an argon2 password hash, and whether
the account is disabled.

Passwords are hashed with argon2id (argon2-cffi, RFC 9106's low-memory profile: 64 MiB,
3 passes), which costs a guesser with a stolen store as much memory as time. Hashing is
slow on purpose (0.1-0.2 s), so the API hashes through ``PasswordWork``, in worker threads;
the store's reads and writes stay on the loop.

Signing in with a name nobody has still verifies a password against a fixed hash, so the
answer takes as long as for a real user: the time does not tell which names exist. Disabled
users, and users whose name is unknown, get the same refusal.

Accounts are never deleted (the audit log names them); disabling one ends its sessions
(gateway/sessions.py). The store keeps at least one enabled admin: the change that would
leave none is refused, so an admin cannot lock everyone out through the API (``citygw
users`` on the store can always add one).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from functools import cache
from typing import Any

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.principals import MAX_NAME_CHARS, NAME, ROLES, Principal, Role
from gateway.store import in_transaction

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
MAX_USERS = 1000
MAX_CONCURRENT_HASHES = 2
_HASHER = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)


class UserError(ValueError):
    """A request about users that cannot be honoured; ``str()`` says why."""


class UnknownUser(LookupError):
    pass


class UserConflict(UserError):
    """The request clashes with the users there are: a name taken, the most users reached,
    or no enabled admin left after it."""


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise UserError(
            f"name: 1 to {MAX_NAME_CHARS} letters, digits and . _ @ -, starting with a letter"
            " or digit"
        )
    return name


def check_password(password: str) -> str:
    """The password if it may be set (never echoed in the refusal)."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise UserError(f"password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    return password


def hash_password(password: str) -> str:
    """Slow: run it off the event loop. A new password is checked first (``check_password``);
    a stored one being rehashed is taken as it is."""
    return _HASHER.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` is the one hashed; with no hash (an unknown or disabled user)
    a dummy hash is checked, so the time taken is the same. Slow: off the event loop."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


@cache
def _dummy_hash() -> str:
    return _HASHER.hash("not any user's password: keeps refusals evenly slow")


class PasswordWork:
    """argon2 for the event loop: in a worker thread, at most ``MAX_CONCURRENT_HASHES`` at
    once (each takes 64 MiB), so sign-ins never stall ingest nor exhaust memory."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_HASHES)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(hash_password, password)

    async def matches(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(password_matches, password_hash, password)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: Role
    created_ms: int
    changed_ms: int
    disabled_ms: int | None

    def principal(self) -> Principal:
        return Principal(self.name, self.role, "session")

    def shown(self) -> dict[str, Any]:
        """What the API lists: never the hash."""
        return {
            "name": self.name,
            "role": self.role,
            "created_ms": self.created_ms,
            "changed_ms": self.changed_ms,
            "disabled": self.disabled_ms is not None,
            "disabled_ms": self.disabled_ms,
        }


_COLUMNS = "id, name, role, created_ms, changed_ms, disabled_ms"


class Users:
    """The ``users`` table. Methods take already-hashed passwords, so none of them is slow."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def all(self) -> list[User]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM users ORDER BY name").fetchall()
        return [User(*row) for row in rows]

    def get(self, name: str) -> User:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownUser(f"no user {name!r}")
        return User(*row)

    def sign_in_hash(self, name: str) -> tuple[User, str] | None:
        """The enabled user of that name and its hash; None for unknown or disabled."""
        row = self.conn.execute(
            f"SELECT {_COLUMNS}, password_hash FROM users WHERE name = ? AND disabled_ms IS NULL",
            (name,),
        ).fetchone()
        return None if row is None else (User(*row[:-1]), row[-1])

    def create(self, name: str, role: Role, password_hash: str, now_ms: int) -> User:
        check_name(name)
        _check_role(role)

        def insert() -> User:
            count = self.conn.execute("SELECT count(*) FROM users").fetchone()[0]
            if count >= MAX_USERS:
                raise UserConflict(f"there are {count} users, the most allowed")
            if self.conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise UserConflict(f"a user named {name!r} exists already")
            cursor = self.conn.execute(
                "INSERT INTO users (name, role, password_hash, created_ms, changed_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role, password_hash, now_ms, now_ms),
            )
            assert cursor.lastrowid is not None
            return User(cursor.lastrowid, name, role, now_ms, now_ms, None)

        return in_transaction(self.conn, insert)

    def set_role(self, name: str, role: Role, now_ms: int) -> tuple[User, User]:
        """(before, after)."""
        _check_role(role)
        return self._update(name, now_ms, "role = ?", (role,), demotes=role != "admin")

    def set_disabled(self, name: str, disabled: bool, now_ms: int) -> tuple[User, User]:
        if disabled:
            return self._update(name, now_ms, "disabled_ms = ?", (now_ms,), demotes=True)
        return self._update(name, now_ms, "disabled_ms = NULL", (), demotes=False)

    def set_password_hash(self, name: str, password_hash: str, now_ms: int) -> User:
        return self._update(name, now_ms, "password_hash = ?", (password_hash,), False)[1]

    def _update(
        self, name: str, now_ms: int, assignment: str, args: tuple, demotes: bool
    ) -> tuple[User, User]:
        def update() -> tuple[User, User]:
            before = self.get(name)
            self.conn.execute(
                f"UPDATE users SET {assignment}, changed_ms = ? WHERE id = ?",
                (*args, now_ms, before.id),
            )
            was_admin = before.role == "admin" and before.disabled_ms is None
            if demotes and was_admin and not self._enabled_admins():
                raise UserConflict(f"{name!r} is the last enabled admin: make another admin first")
            return before, self.get(name)

        return in_transaction(self.conn, update)

    def _enabled_admins(self) -> int:
        query = "SELECT count(*) FROM users WHERE role = 'admin' AND disabled_ms IS NULL"
        return self.conn.execute(query).fetchone()[0]


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"role: one of {', '.join(ROLES)}")
