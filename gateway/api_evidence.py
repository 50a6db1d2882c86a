"""``GET /evidence/{name}?exp=&sig=``: evidence pictures for whoever holds a signed link.

Public (the API guard lets ``/evidence/`` through without the token): city platforms fetch
a case's ``media_url`` with no credentials of ours. The signature is checked first, so a
link nobody signed or one past its time gets 403 whether or not the picture exists; a
signed link to a picture retention has since deleted gets 404. Operators with the token
still read pictures by bare name at ``/api/v1/evidence/{name}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from gateway.evidence import media_type, read_evidence
from gateway.evidence_links import SIGNED_PREFIX, EvidenceLinks


def wall_s() -> int:
    return int(time.time())


def evidence_router(
    folder: Path, links: EvidenceLinks, now_s: Callable[[], int] = wall_s
) -> APIRouter:
    router = APIRouter(prefix=SIGNED_PREFIX.rstrip("/"))

    @router.get("/{name}")
    async def signed_evidence(name: str, exp: str = "", sig: str = "") -> Response:
        if not links.valid(name, exp, sig, now_s()):
            raise HTTPException(403, "this evidence link is not signed, or has expired")
        picture = await asyncio.to_thread(read_evidence, folder, name)
        if picture is None:
            raise HTTPException(404, "no such evidence file")
        return Response(
            picture, media_type=media_type(name), headers={"Cache-Control": "private, max-age=3600"}
        )

    return router
