"""Adapters to workflow platforms. Each turns HTTP outcomes into two kinds of failure:
retryable (network, timeouts, 5xx, 408/429, auth that an operator may fix) and permanent
(other 4xx: the platform refuses this request as it is; retrying cannot help)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

RETRYABLE_STATUS = {401, 403, 408, 425, 429}


class PlatformError(Exception):
    def __init__(self, reason: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class CasePlatform(Protocol):
    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]: ...

    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]: ...

    async def cases_changed_since(self, since_iso: str | None) -> list[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class BundledPlatform:
    """The bundled platform's REST API (and any platform that speaks it)."""

    def __init__(self, base_url: str, token: str, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    async def open_case(self, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        return await self._send("POST", "/api/v1/cases", body, idempotency_key)

    async def add_evidence(
        self, case_id: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        return await self._send("POST", f"/api/v1/cases/{case_id}/evidence", body, idempotency_key)

    async def cases_changed_since(self, since_iso: str | None) -> list[dict[str, Any]]:
        params = {"since": since_iso} if since_iso else {}
        result = await self._send("GET", "/api/v1/cases", None, None, params=params)
        return list(result["cases"])

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        idempotency_key: str | None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            response = await self._client.request(
                method, path, json=body, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            raise PlatformError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if response.is_success:
            return response.json()
        detail = response.text[:300]
        status = response.status_code
        retryable = status >= 500 or status in RETRYABLE_STATUS
        retry_after = _retry_after(response.headers.get("Retry-After"))
        raise PlatformError(
            f"HTTP {status} on {method} {path}: {detail}",
            retryable=retryable,
            retry_after_s=retry_after,
        )


def _retry_after(header: str | None) -> float | None:
    try:
        return float(header) if header else None
    except ValueError:
        return None
