"""API tokens per client: a script, a dashboard, another system, each with its own name and
role, revocable on its own, unlike the one machine token of ``api.token_file``.

A token is 256 random bits, shown once when it is made and stored only as its SHA-256:
the store never holds one that could be replayed. (A fast hash is enough here, unlike for
passwords: nobody can guess 256 random bits, however fast each guess.) Revoking keeps the
row, so the audit log's names still point at something; a revoked token's name may be
given to a new one.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.principals import NAME, ROLES, Principal, Role
from gateway.store import in_transaction

PREFIX = "citygw_"  # tells a reader of a leaked config what the string opens
MAX_PRESENTED_BYTES = 512  # the machine token's own bound
MAX_LIVE_TOKENS = 200


class TokenError(ValueError):
    """A token request that cannot be honoured; ``str()`` says why."""


class TokenConflict(TokenError):
    """A live token has the name, or the most live tokens are reached."""


class UnknownToken(LookupError):
    pass


def _digest(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


@dataclass(frozen=True, slots=True)
class ClientToken:
    id: int
    name: str
    role: Role
    created_ms: int
    created_by: str
    revoked_ms: int | None

    def shown(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_ms": self.created_ms,
            "created_by": self.created_by,
            "revoked": self.revoked_ms is not None,
            "revoked_ms": self.revoked_ms,
        }


_COLUMNS = "id, name, role, created_ms, created_by, revoked_ms"


class ClientTokens:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def principal(self, presented: bytes) -> Principal | None:
        """The live token's principal, or None."""
        if not 0 < len(presented) <= MAX_PRESENTED_BYTES:
            return None
        row = self.conn.execute(
            "SELECT name, role FROM client_tokens WHERE token_sha256 = ? AND revoked_ms IS NULL",
            (_digest(presented),),
        ).fetchone()
        return None if row is None else Principal(row[0], row[1], "client_token")

    def all(self) -> list[ClientToken]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM client_tokens ORDER BY id DESC")
        return [ClientToken(*row) for row in rows.fetchall()]

    def create(
        self, name: str, role: Role, created_by: str, now_ms: int
    ) -> tuple[ClientToken, str]:
        """The new token's row and the token itself, which nothing keeps."""
        if not NAME.fullmatch(name):
            raise TokenError("name: 1 to 64 letters, digits and . _ @ -")
        if role not in ROLES:
            raise TokenError(f"role: one of {', '.join(ROLES)}")
        token = PREFIX + secrets.token_urlsafe(32)

        def insert() -> ClientToken:
            live = self.conn.execute(
                "SELECT count(*), sum(name = ?) FROM client_tokens WHERE revoked_ms IS NULL",
                (name,),
            ).fetchone()
            if live[1]:
                raise TokenConflict(f"a live token named {name!r} exists already")
            if live[0] >= MAX_LIVE_TOKENS:
                raise TokenConflict(f"{live[0]} tokens are live, the most allowed: revoke one")
            cursor = self.conn.execute(
                "INSERT INTO client_tokens (name, role, token_sha256, created_ms, created_by)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role, _digest(token.encode()), now_ms, created_by),
            )
            assert cursor.lastrowid is not None
            return ClientToken(cursor.lastrowid, name, role, now_ms, created_by, None)

        return in_transaction(self.conn, insert), token

    def revoke(self, token_id: int, now_ms: int) -> tuple[ClientToken, ClientToken]:
        """(before, after); revoking a revoked token changes nothing."""

        def update() -> tuple[ClientToken, ClientToken]:
            before = self._get(token_id)
            self.conn.execute(
                "UPDATE client_tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                (now_ms, token_id),
            )
            return before, self._get(token_id)

        return in_transaction(self.conn, update)

    def _get(self, token_id: int) -> ClientToken:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM client_tokens WHERE id = ?", (token_id,)
        ).fetchone()
        if row is None:
            raise UnknownToken(f"no token {token_id}")
        return ClientToken(*row)
