"""An adapter's secrets never leave in its error reasons.

A failure's reason goes to the outbox row (``last_error``), the logs and the console,
where viewers read it. It quotes what the platform answered, and a platform may echo what
it was sent: an Open311 server "invalid api_key k3y...", an intake's error page showing
the request's headers. So every ``PlatformError`` an adapter raises is scrubbed of the
adapter's own secret values (an API key, a bearer token, an HMAC secret): each ``***``.

A reply echoes a value as it was sent or encoded (percent-encoded in a query or form, JSON-
or repr-escaped once a reason shows it), and reasons cut long texts, which can cut a
secret and leave its beginning: ``secret_forms`` lists the encodings, ``scrubbed``
replaces each whole and the beginning of one where a text ends or was cut (``...``,
``…``). An error body is scrubbed before it is read (``scrubbed_body``), since its
details are cut and joined mid-text. Secrets shorter than ``MIN_SECRET_CHARS`` are not
looked for: scrubbing every 3-letter run would garble reasons, and such a value is
guessed sooner than leaked.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import quote, quote_plus

from case_bridge.platform import PlatformError

HIDDEN = "***"
MIN_SECRET_CHARS = 6
_CUT = re.compile(r"\.\.\.|…")

P = ParamSpec("P")
R = TypeVar("R")


class HidesSecrets(Protocol):
    """An adapter: the forms of its secrets (``secret_forms``) its errors never show."""

    @property
    def secret_forms(self) -> tuple[str, ...]: ...


A = TypeVar("A", bound=HidesSecrets)


def secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret as a reply or a reason may show it, longest first."""
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < MIN_SECRET_CHARS:
            continue
        forms |= {
            secret,
            quote(secret, safe=""),
            quote_plus(secret),
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
            repr(secret)[1:-1],
            repr(secret.encode())[2:-1],
        }
    return tuple(sorted(forms, key=lambda form: (-len(form), form)))


def scrubbed(text: str, forms: tuple[str, ...]) -> str:
    """``text`` with each form whole, and the beginning of one that a cut or the end of
    the text follows, replaced by ``HIDDEN``."""
    for form in forms:
        text = text.replace(form, HIDDEN)
    ends = [match.start() for match in _CUT.finditer(text)] + [len(text)]
    for end in reversed(ends):  # from the right: earlier positions stay where they were
        text = _cut_tail_hidden(text, end, forms)
    return text


def _cut_tail_hidden(text: str, end: int, forms: tuple[str, ...]) -> str:
    """``text`` with the longest beginning of a form that ends at ``end`` hidden."""
    for form in forms:
        for size in range(min(len(form) - 1, end), MIN_SECRET_CHARS - 1, -1):
            if text[end - size : end] == form[:size]:
                return text[: end - size] + HIDDEN + text[end:]
    return text


def scrubbed_body(body: bytes, forms: tuple[str, ...]) -> bytes:
    """An error reply's bytes with each form hidden, before its details are cut."""
    for form in forms:
        body = body.replace(form.encode(), HIDDEN.encode())
    return body


def hide_secrets(error: BaseException, forms: tuple[str, ...]) -> None:
    """Scrubs the reason of ``error`` and of each platform error it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PlatformError):
            current.reason = scrubbed(current.reason, forms)
            current.args = (current.reason,)
        current = current.__cause__ or current.__context__


def secrets_hidden(
    method: Callable[Concatenate[A, P], Awaitable[R]],
) -> Callable[Concatenate[A, P], Awaitable[R]]:
    """An adapter's method whose ``PlatformError`` reasons are scrubbed of its secrets."""

    @functools.wraps(method)
    async def hidden(self: A, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except PlatformError as error:
            hide_secrets(error, self.secret_forms)
            raise

    return hidden
