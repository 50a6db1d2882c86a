"""Principals for tests of the API's users, sessions and roles: the gateway's API served on
loopback (tests/api_server.py) with its machine token, users made straight in its store,
and a browser-like client that signs in and sends the session cookie and CSRF token the way
the console does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import httpx
from api_server import ServedApi, gateway_for_api

from gateway.principals import Role
from gateway.sessions import COOKIE
from gateway.users import Users, hash_password

TOKEN = "0123456789abcdef-machine-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "correct horse battery staple"
SAFE = ("GET", "HEAD", "OPTIONS")


class Deployments:
    """Gateways' APIs served over loopback for one test (each on its own store in its own
    folder) and the browsers opened on them, all closed by ``close``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.served: list[ServedApi] = []
        self.browsers: list[Browser] = []

    def serve(self, **api) -> ServedApi:
        """The API with these ``api`` settings; its client sends no credentials unless told."""
        folder = self.tmp_path / f"gateway-{len(self.served)}"
        folder.mkdir()
        (folder / "api-token").write_text(TOKEN + "\n")
        self.served.append(ServedApi(gateway_for_api(folder, {"token_file": "api-token", **api})))
        return self.served[-1]

    def browser(self, served: ServedApi) -> Browser:
        self.browsers.append(Browser(served))
        return self.browsers[-1]

    def close(self) -> None:
        for browser in self.browsers:
            browser.close()
        for served in self.served:
            served.close()
            served.gateway.conn.close()


@contextmanager
def one_deployment(tmp_path: Path) -> Iterator[ServedApi]:
    """One gateway's API served with no ``api`` settings, its ``Deployments`` kept on it as
    ``deployments`` (for its browsers); all closed after."""
    made = Deployments(tmp_path)
    api = made.serve()
    api.deployments = made
    try:
        yield api
    finally:
        made.close()


def add_user(served: ServedApi, name: str, role: Role, password: str = PASSWORD) -> None:
    """A user in the store, its password hashed by the gateway's own hasher (once per
    password: argon2 is slow on purpose, and one hash serves every user of the tests)."""
    Users(served.gateway.conn).create(name, role, _hashed(password), int(time.time() * 1000))


@cache
def _hashed(password: str) -> str:
    return hash_password(password)


class Browser:
    """One signed-in browser: the cookie and the CSRF token from its sign-in. The cookie is
    Secure, which httpx's jar keeps off plain HTTP, so it is sent by hand as a browser on
    loopback (a secure context) would."""

    def __init__(self, served: ServedApi) -> None:
        self.http = httpx.Client(base_url=served.url, timeout=10)
        self.session_id: str | None = None
        self.csrf: str | None = None

    def sign_in(self, name: str, password: str = PASSWORD) -> httpx.Response:
        response = self.http.post("/api/v1/session", json={"username": name, "password": password})
        if response.status_code == 200:
            self.session_id = response.cookies[COOKIE]
            self.csrf = response.json()["csrf"]
        return response

    def request(self, method: str, path: str, csrf: str | None = "", **kwargs) -> httpx.Response:
        """With the session cookie, and on unsafe methods the session's CSRF token unless
        ``csrf`` is None (send none) or another string (send that)."""
        headers = {"Cookie": f"{COOKIE}={self.session_id}", **kwargs.pop("headers", {})}
        if method not in SAFE and csrf is not None:
            headers["X-CSRF-Token"] = csrf or self.csrf or ""
        return self.http.request(method, path, headers=headers, **kwargs)

    def close(self) -> None:
        self.http.close()


def rows(served: ServedApi, table: str) -> int:
    assert table in ("users", "sessions", "client_tokens", "audit")
    return served.gateway.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
