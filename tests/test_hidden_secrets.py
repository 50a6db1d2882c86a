"""A platform that echoes our secret never gets it into a failure's reason.

Reasons reach the outbox row (``last_error``), the logs and the console. Real HTTP on
loopback: an Open311 server (``tests/open311_deviant.py``) and the eGova intake stand-in
(``tests/egova_intake.py``) answer with our api_key, bearer token or HMAC secret in their
error texts: whole, percent-encoded, cut short by the reason's length limits. No piece of
six characters of the secret is left in any reason, and the outbox row of a command the
server refused carries the reason hidden. Property tests: any text scrubbed keeps no
secret whole or cut, and a text without the secret's characters is left as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import test_mapped_rest
from egova_intake import SECRET, TOKEN, EgovaIntakeFake, Forced
from hypothesis import given, settings
from hypothesis import strategies as st
from open311_deviant import DeviantServer
from scripted_platform import Reply
from test_delivery_lookup import connect as outbox_at
from test_mapped_rest import Connect, case_body, example_data, failure_of
from test_open311 import body_of, deviant_adapter
from test_outbox_dispatch import FAST, Run, command, enqueue, rows

from case_bridge.hidden_secrets import HIDDEN, MIN_SECRET_CHARS, scrubbed, secret_forms
from case_bridge.platform import Failure

KEY = "Sk-7Qz/Wx+Jv=Lp9Ty3Rb"  # characters a query or a form encodes


def leaks(reason: str, secret: str) -> list[str]:
    """The pieces of ``MIN_SECRET_CHARS`` of any form of ``secret`` found in ``reason``."""
    return [
        form[i : i + MIN_SECRET_CHARS]
        for form in secret_forms([secret])
        for i in range(len(form) - MIN_SECRET_CHARS + 1)
        if form[i : i + MIN_SECRET_CHARS] in reason
    ]


runner, store, connect = test_mapped_rest.runner, test_mapped_rest.store, test_mapped_rest.connect


@pytest.fixture
def deviant() -> Iterator[DeviantServer]:
    with DeviantServer() as server:
        yield server


OPEN311_ECHOES = {
    "whole": Reply(400, [{"code": 400, "description": f"invalid api_key {KEY}"}]),
    "cut in the middle": Reply(
        400, [{"code": 400, "description": "x" * 290 + KEY}, {"code": 401, "description": "y"}]
    ),
    "percent-encoded": Reply(
        403,
        f"<pre>api_key={quote_plus(KEY)}&service_code=001</pre>".encode(),
        {"Content-Type": "text/html"},
    ),
    "a 2xx cut short": Reply(200, b"<html>" + b"y" * 60 + KEY.encode()),
}


@pytest.mark.parametrize("echo", list(OPEN311_ECHOES))
def test_an_open311_server_echoing_the_api_key_gets_it_hidden(
    runner: asyncio.Runner, deviant: DeviantServer, echo: str
) -> None:
    deviant.script("POST", "/requests.json", OPEN311_ECHOES[echo])
    adapter = deviant_adapter(deviant, api_key=KEY)
    error = failure_of(runner, adapter.open_case(body_of("INC-k"), "INC-k/1"))
    runner.run(adapter.aclose())
    assert leaks(error.reason, KEY) == [] and HIDDEN in error.reason
    assert error.reason.startswith("HTTP")  # the rest of the reason is kept


def test_the_outbox_row_of_a_refused_command_shows_the_reason_hidden(
    runner: asyncio.Runner, deviant: DeviantServer, tmp_path: Path
) -> None:
    deviant.script("POST", "/requests.json", OPEN311_ECHOES["whole"])
    adapter = deviant_adapter(deviant, api_key=KEY)
    with contextlib.closing(outbox_at(tmp_path / "outbox.db")) as conn:
        enqueue(conn, command("INC-k", 1))
        runner.run(Run(conn, adapter, FAST).drain_until_quiet(passes=3))
        [(_, state, _, last_error)] = rows(conn)
    runner.run(adapter.aclose())
    assert state == "parked"
    assert last_error == "HTTP 400 on POST requests.json: 400: invalid api_key ***"


@pytest.mark.parametrize(
    ("auth", "forced", "failure"),
    [
        ({"type": "bearer", "secret": TOKEN},
         Forced(401, {"code": 401, "msg": f"token {TOKEN} expired"}), Failure.TRANSIENT),
        ({"type": "api_key", "secret": TOKEN},
         Forced(500, f"<html>X-API-Key: {TOKEN}</html>".encode()), Failure.TRANSIENT),
        (None, Forced(200, {"code": 1001, "msg": "x" * 190 + SECRET}), Failure.REFUSED),
        (None, Forced(200, {"code": 0, "data": {"eventID": ["a" * 50 + SECRET]}}),
         Failure.DOUBTFUL),
    ],
    ids=["bearer", "api-key", "hmac-message-cut", "hmac-as-case-id"],
)  # fmt: skip
def test_a_mapped_platform_echoing_its_secret_gets_it_hidden(
    runner: asyncio.Runner, connect: Connect, auth: dict[str, Any] | None, forced: Forced,
    failure: Failure,
) -> None:  # fmt: skip
    with EgovaIntakeFake(auth=auth["type"] if auth else "hmac") as intake:
        data = example_data(intake.url, **({"auth": auth} if auth else {}))
        intake.script(forced)
        error = failure_of(runner, connect(data).open_case(case_body(), "INC-0042/1"))
    secret = auth["secret"] if auth else SECRET
    assert error.failure is failure
    assert leaks(error.reason, secret) == [] and HIDDEN in error.reason


secrets = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=6,
                  max_size=40)  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(before=st.text(max_size=40), secret=secrets, kept=st.integers(0, 60),
       after=st.text(max_size=20))  # fmt: skip
def test_any_text_keeps_no_secret_whole_or_cut(
    before: str, secret: str, kept: int, after: str
) -> None:
    forms = secret_forms([secret])
    whole = scrubbed(before + secret + after, forms)
    assert secret not in whole
    cut = scrubbed((before + secret)[: len(before) + kept] + "..." + after, forms)
    head = cut[: cut.rindex("...")] if "..." in cut else cut
    shown = min(kept, len(secret))
    assert shown < MIN_SECRET_CHARS or not head.endswith(secret[:shown])


@settings(max_examples=50, deadline=None)
@given(text=st.text(st.characters(codec="ascii", exclude_characters="%\\"), max_size=200))
def test_a_text_without_the_secret_s_characters_is_left_as_it_was(text: str) -> None:
    """Every form of this secret holds a non-ASCII character, ``%`` or ``\\``."""
    assert scrubbed(text, secret_forms(["ÄÖÜ€日本語秘密"])) == text
