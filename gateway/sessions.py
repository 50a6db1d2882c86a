"""Browser sessions, kept server-side in the store: a signed-in person's cookie names one.

A session id is 256 random bits, sent once in the ``citygw_session`` cookie and stored only
as its SHA-256, so the store never holds a live cookie. Each session has its own CSRF token
(the console sends it back in ``X-CSRF-Token`` on every write; a page of another site can
send the cookie, never read the token) and an absolute expiry, ``api.session_lifetime_s``
after sign-in. Sessions end on sign-out, at expiry, and when their user is disabled or gets
a new password. Their user's role is read at every request, so a role change applies at
once.

Kept in SQLite rather than in memory so that a gateway restart does not sign everyone out.
Expired rows are swept at each sign-in, and a user holds at most ``MAX_PER_USER`` sessions
(the oldest ends first), so the table stays small.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from gateway.principals import Principal
from gateway.store import in_transaction

COOKIE = "citygw_session"
CSRF_HEADER = "x-csrf-token"
MAX_PER_USER = 16
MAX_ID_CHARS = 128  # a cookie longer than any id handed out is not looked up


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """A live session as the guard finds it for a request."""

    id_sha256: str
    principal: Principal
    csrf: str
    expires_ms: int


class Sessions:
    def __init__(self, conn: sqlite3.Connection, lifetime_s: int) -> None:
        self.conn = conn
        self.lifetime_ms = lifetime_s * 1000

    def start(self, user_id: int, now_ms: int) -> tuple[str, str]:
        """A new session for the user: (the cookie's id, the CSRF token)."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)

        def insert() -> None:
            self.conn.execute("DELETE FROM sessions WHERE expires_ms <= ?", (now_ms,))
            self.conn.execute(
                "DELETE FROM sessions WHERE id_sha256 IN (SELECT id_sha256 FROM sessions"
                " WHERE user_id = ? ORDER BY created_ms DESC LIMIT -1 OFFSET ?)",
                (user_id, MAX_PER_USER - 1),
            )
            self.conn.execute(
                "INSERT INTO sessions (id_sha256, user_id, csrf, created_ms, expires_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (_digest(session_id), user_id, csrf, now_ms, now_ms + self.lifetime_ms),
            )

        in_transaction(self.conn, insert)
        return session_id, csrf

    def find(self, session_id: str, now_ms: int) -> Session | None:
        """The live session of an enabled user, or None."""
        if not 0 < len(session_id) <= MAX_ID_CHARS:
            return None
        digest = _digest(session_id)
        row = self.conn.execute(
            "SELECT u.name, u.role, s.csrf, s.expires_ms FROM sessions s"
            " JOIN users u ON u.id = s.user_id"
            " WHERE s.id_sha256 = ? AND s.expires_ms > ? AND u.disabled_ms IS NULL",
            (digest, now_ms),
        ).fetchone()
        if row is None:
            return None
        name, role, csrf, expires_ms = row
        return Session(digest, Principal(name, role, "session"), csrf, expires_ms)

    def end(self, session: Session) -> None:
        in_transaction(
            self.conn,
            lambda: self.conn.execute(
                "DELETE FROM sessions WHERE id_sha256 = ?", (session.id_sha256,)
            ),
        )

    def end_all(self, user_id: int) -> int:
        """End every session of a user (disabled, or given a new password); how many."""
        return in_transaction(
            self.conn,
            lambda: self.conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)),
        ).rowcount
