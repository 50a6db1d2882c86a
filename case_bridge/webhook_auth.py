"""Who sent a status webhook: the platform's signature (or shared token) checked against
the secret shared with it, before anything of the body is read.

One checker for every scheme the settings describe (``webhook_settings.WebhookHmac``,
``WebhookToken``); the gateway's own format is the HMAC scheme ``CITYGW_SIGNATURE``. A
request without well-formed credentials is ``unsigned``, one whose credentials do not
match is ``bad_signature``; neither refusal says anything of the secret or of what was
expected. Header values are matched against bounded patterns before any number is read
from them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping

from case_bridge.webhook_settings import WebhookHmac, WebhookToken

# The bundled platform's signature (simulators/platform/webhooks.py).
CITYGW_SIGNATURE = WebhookHmac(
    type="hmac_sha256",
    signature_header="X-Citygw-Signature",
    timestamp_header="X-Citygw-Timestamp",
    prefix="sha256=",
)
_TIMESTAMP = re.compile(r"[0-9]{1,13}")  # epoch ms has 13 digits until the year 2286
_DIGEST = {
    "hex": re.compile(r"[0-9a-fA-F]{64}"),
    "base64": re.compile(r"[A-Za-z0-9+/]{43}="),
}


class WebhookRefusal(Exception):
    """An event refused; ``reason`` is the counter it goes to, the text says why to the
    sender (never a secret, never more than bounded parts of what was sent)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class WebhookAuth:
    """Checks one request's credentials. ``signs_time``: the scheme signs a timestamp, so
    an event can be refused as stale and its id need be remembered only so long."""

    def __init__(self, scheme: WebhookHmac | WebhookToken, secret: str) -> None:
        self._scheme = scheme
        self._secret = secret.encode()
        self.signs_time = isinstance(scheme, WebhookHmac) and scheme.timestamp_header is not None

    def signed_at_s(self, headers: Mapping[str, str], body: bytes) -> float | None:
        """When the request says it was signed (Unix seconds), None for a scheme that signs
        no time; ``WebhookRefusal`` unless the credentials are the platform's."""
        if isinstance(self._scheme, WebhookToken):
            self._check_token(self._scheme, headers)
            return None
        return self._check_hmac(self._scheme, headers, body)

    def _check_token(self, scheme: WebhookToken, headers: Mapping[str, str]) -> None:
        given = headers.get(scheme.header.lower(), "")
        if not given:
            raise WebhookRefusal("unsigned", f"{scheme.header} is required")
        # Starlette reads header values as latin-1: encoded back, they are the bytes sent.
        sent = given.encode("latin-1", errors="replace")
        if not hmac.compare_digest(sent, scheme.prefix.encode() + self._secret):
            raise WebhookRefusal("bad_signature", f"{scheme.header} does not match")

    def _check_hmac(
        self, scheme: WebhookHmac, headers: Mapping[str, str], body: bytes
    ) -> float | None:
        timestamp = ""
        if scheme.timestamp_header is not None:
            timestamp = headers.get(scheme.timestamp_header.lower(), "")
        sent = _digest(scheme, headers.get(scheme.signature_header.lower(), ""))
        if sent is None or (scheme.timestamp_header and not _TIMESTAMP.fullmatch(timestamp)):
            raise WebhookRefusal("unsigned", _required(scheme))
        before, after = scheme.message.encode().split(b"{body}")
        message = b"".join((_filled(before, timestamp), body, _filled(after, timestamp)))
        expected = hmac.new(self._secret, message, hashlib.sha256).digest()
        if not hmac.compare_digest(sent, expected):
            raise WebhookRefusal("bad_signature", "the signature does not match")
        if scheme.timestamp_header is None:
            return None
        return int(timestamp) / (1000 if scheme.timestamp_unit == "ms" else 1)


def _filled(template: bytes, timestamp: str) -> bytes:
    return template.replace(b"{timestamp}", timestamp.encode())


def _digest(scheme: WebhookHmac, value: str) -> bytes | None:
    """The digest the signature header carries, None unless it is well formed."""
    if not value.startswith(scheme.prefix):
        return None
    text = value[len(scheme.prefix) :]
    if not _DIGEST[scheme.encoding].fullmatch(text):
        return None
    if scheme.encoding == "hex":
        return bytes.fromhex(text)
    return base64.b64decode(text, validate=True)


def _required(scheme: WebhookHmac) -> str:
    signature = f"{scheme.signature_header} ({scheme.prefix}<{scheme.encoding}>)"
    if scheme.timestamp_header is None:
        return f"{signature} is required"
    unit = "seconds" if scheme.timestamp_unit == "s" else "milliseconds"
    return f"{scheme.timestamp_header} (Unix {unit}) and {signature} are required"
