"""Camera URL helpers: credentials go into URLs, and must never go into logs or statuses."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``rtsp://admin:secret@host/x`` → ``rtsp://admin:***@host/x``, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def redact(text: str, url: str) -> str:
    """Removes ``url``'s password from ``text`` (library errors quote the URL they got)."""
    password = urlsplit(url).password
    return text.replace(url, redact_url(url)).replace(password, "***") if password else text


def with_credentials(url: str, user: str, password: str) -> str:
    """Adds ``user:password@`` to ``url`` unless it already carries credentials.

    Percent-encoded, so a password with ``@`` or ``:`` cannot split the URL wrongly.
    """
    parts = urlsplit(url)
    if not user or parts.username is not None:
        return url
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def split_credentials(url: str) -> tuple[str, str, str]:
    """``http://ad%40min:pw@host/x`` → (``http://host/x``, ``ad@min``, ``pw``).

    An HTTP client sends a URL's own credentials as Basic before any challenge, in the
    clear on plain HTTP; split off, they go only where the server asks, Digest first."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, "", ""
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, unquote(parts.username), unquote(parts.password or "")
