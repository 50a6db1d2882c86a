"""Property tests of the sign-in, users, tokens and audit routes and of the guard's
credentials, over real loopback HTTP on a real store: whatever a client sends, the answer is
a refusal with a reason or the documented success, never a 5xx, and a refusal stores
nothing (no session, user, token or audit entry)."""

from __future__ import annotations

import json

import pytest
from api_principals import ADMIN, Deployments, add_user, rows
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.principals import NAME

QUICK = settings(max_examples=50, deadline=None, derandomize=True)
# Each valid-looking sign-in or new user costs an argon2 hash (0.1-0.2 s): fewer of those.
HASHING = settings(max_examples=30, deadline=None, derandomize=True)

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid three times in four: a body whose every field is valid is then common enough
    to test the success path too."""
    return st.integers(0, 3).flatmap(lambda n: invalid if n == 3 else valid)


names = mostly(st.from_regex(NAME, fullmatch=True), st.text(max_size=70))
roles = mostly(st.sampled_from(["viewer", "operator", "admin"]),
               st.one_of(st.text(max_size=10), st.integers(), st.none()))  # fmt: skip
passwords = mostly(st.text(min_size=12, max_size=40), st.text(max_size=11))
reasons = mostly(st.text(max_size=40), st.one_of(st.text(min_size=501, max_size=510),
                                                 st.integers()))  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=40))  # fmt: skip


def bodies(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """JSON bodies of the documented shape (each field drawn valid or not, sometimes with
    an extra one), with fields missing, and far from it (any JSON, bytes that are not)."""
    whole = st.fixed_dictionaries(fields).map(json.dumps)
    partial = st.fixed_dictionaries({}, optional={**fields, "extra": scalars}).map(json.dumps)
    far = st.one_of(
        st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5).map(
            json.dumps
        ),
        st.binary(max_size=60),
        st.just("[" * 5000),
    )
    return st.integers(0, 4).flatmap(lambda n: (whole, whole, whole, partial, far)[n])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    deployments = Deployments(tmp_path_factory.mktemp("users-properties"))
    api = deployments.serve()
    add_user(api, "ana", "operator")
    add_user(api, "root", "admin")
    yield api
    deployments.close()


def snapshot(served) -> dict[str, list]:
    conn = served.gateway.conn
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("users", "sessions", "client_tokens", "audit")}  # fmt: skip


def post(served, path: str, body: str | bytes, headers: dict | None = None):
    sent = {"Content-Type": "application/json", **(headers or {})}
    return served.http.post(path, content=body, headers=sent)


@HASHING
@given(body=bodies({"username": names, "password": passwords}))
def test_sign_in_refuses_what_it_cannot_honour_and_stores_no_session(served, body):
    sessions = rows(served, "sessions")
    response = post(served, "/api/v1/session", body)
    assert response.status_code in (400, 401, 429), response.text
    assert rows(served, "sessions") == sessions
    assert "set-cookie" not in response.headers


@HASHING
@given(body=bodies({"name": names, "role": roles, "password": passwords,
                    "reason": reasons}))  # fmt: skip
def test_new_users_are_made_whole_or_not_at_all(served, body):
    users = rows(served, "users")
    response = post(served, "/api/v1/users", body, ADMIN)
    assert response.status_code in (201, 400, 409), response.text
    assert rows(served, "users") == users + (response.status_code == 201)
    sent = json.loads(body) if isinstance(body, str) and body[:1] == "{" else {}
    password, name = sent.get("password"), str(sent.get("name"))
    if isinstance(password, str) and len(password) >= 4 and password not in name:
        assert password not in response.text  # never echoed, even in a refusal


@QUICK
@given(body=bodies({"name": names, "role": roles, "reason": reasons}))
def test_new_tokens_are_made_whole_or_not_at_all(served, body):
    before = snapshot(served)
    response = post(served, "/api/v1/tokens", body, ADMIN)
    assert response.status_code in (201, 400, 409), response.text
    if response.status_code != 201:
        assert snapshot(served) == before


@QUICK
@given(
    name=st.one_of(st.sampled_from(["ana", "root", "nobody"]), printable),
    change=st.one_of(
        st.tuples(st.just("role"), bodies({"role": roles, "reason": reasons})),
        st.tuples(
            st.just("disabled"),
            bodies({"disabled": mostly(st.booleans(), scalars), "reason": reasons}),
        ),
    ),
)
def test_user_changes_refused_change_nothing(served, name, change):
    what, body = change
    before = snapshot(served)
    path = f"/api/v1/users/{name.replace('/', '%2F').replace('?', '%3F').replace('#', '%23')}"
    response = served.http.put(f"{path}/{what}", content=body, headers=ADMIN)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert snapshot(served) == before


@QUICK
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    authorization=st.one_of(st.none(), printable, printable.map("Bearer ".__add__)),
    cookie=st.one_of(st.none(), printable, printable.map("citygw_session=".__add__)),
    csrf=st.one_of(st.none(), printable),
)
def test_no_forged_credentials_get_in(served, method, authorization, cookie, csrf):
    headers = {"Authorization": authorization, "Cookie": cookie, "X-CSRF-Token": csrf}
    sent = {key: value.strip() for key, value in headers.items() if value is not None}
    before = snapshot(served)
    path = "/api/v1/outbox/requeue" if method == "POST" else "/api/v1/session"
    response = served.http.request(method, path, headers=sent)
    assert response.status_code in (401, 403), (sent, response.text)
    assert snapshot(served) == before


@QUICK
@given(params=st.dictionaries(
    st.sampled_from(["actor", "action", "target", "since", "until", "limit", "cursor", "x"]),
    st.one_of(printable, st.integers(-(10**20), 10**20).map(str), st.text(max_size=300)),
    max_size=4,
))  # fmt: skip
def test_no_audit_query_makes_the_api_fail(served, params):
    response = served.http.get("/api/v1/audit", headers=ADMIN, params=params)
    assert response.status_code in (200, 400, 414, 422), (params, response.text)
    if response.status_code == 200:
        assert response.json()["count"] == len(response.json()["entries"])
