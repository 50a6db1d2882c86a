"""Which evidence files a mapped-REST platform gets as files, and checking their bytes.

A platform that takes uploads (``upload`` in the mapping, ``mapped_rest_settings.Upload``)
gets each evidence file of a case or of later evidence itself, not only its link. The case
bridge does not know where the gateway keeps files: the gateway hands the adapter an
``EvidenceReader`` that turns a media link of ours back into the bytes it names.

A file goes up only when its hash was recorded with it (``media_files``: ``sha256`` and
``bytes``, see ``case_model.evidence_item``), it is within the platform's
``max_file_bytes`` and within ``max_files``; otherwise its link goes instead, and the
reason is counted. What the reader gives back is compared with the recorded size and
SHA-256 before a byte is sent: a file that is gone (retention removed it) or changed is
refused, so the platform never receives a file other than the one the case recorded.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from case_bridge.mapped_rest_settings import Attach, Upload

# The bytes a media link of ours names, or None when the gateway has no such file. Called
# in a worker thread: it may read a file.
EvidenceReader = Callable[[str], bytes | None]

MAX_FILE_ID_CHARS = 512  # a platform's file id, or the URL it stored the file under
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class EvidenceFile:
    """One media file of a body: its link, the name it is uploaded under, and the hash
    and size recorded when it was written (None for a media entry that had none)."""

    url: str
    name: str
    sha256: str | None
    size: int | None

    @property
    def content_type(self) -> str:
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """``uploads``: the files to send; ``linked``: (file, reason) for each file whose link
    goes instead: ``unhashed``, ``too_large`` or ``over_max_files``."""

    uploads: list[EvidenceFile]
    linked: list[tuple[EvidenceFile, str]]


def evidence_files(body: dict[str, Any]) -> list[EvidenceFile]:
    """The media files of every evidence item of a case or evidence body, in order."""
    files = []
    for item in body.get("evidence") or ():
        for entry in (item.get("media_files") or ()) if isinstance(item, dict) else ():
            if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                files.append(_file(entry))
    return files


def _file(entry: dict[str, Any]) -> EvidenceFile:
    url = entry["url"]
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    digest, size = entry.get("sha256"), entry.get("bytes")
    hashed = (
        isinstance(digest, str)
        and _SHA256.fullmatch(digest) is not None
        and isinstance(size, int)
        and not isinstance(size, bool)
        and size >= 0
    )
    return EvidenceFile(
        url,
        name if _FILE_NAME.fullmatch(name) else "evidence",
        digest if hashed else None,
        size if hashed else None,
    )


def plan_uploads(body: dict[str, Any], upload: Upload) -> UploadPlan:
    plan = UploadPlan([], [])
    for file in evidence_files(body):
        if file.sha256 is None or file.size is None:
            plan.linked.append((file, "unhashed"))
        elif file.size > upload.max_file_bytes:
            plan.linked.append((file, "too_large"))
        elif len(plan.uploads) >= upload.max_files:
            plan.linked.append((file, "over_max_files"))
        else:
            plan.uploads.append(file)
    return plan


def file_problem(file: EvidenceFile, data: bytes | None) -> tuple[str, str] | None:
    """None if ``data`` is the file that was recorded; else what is wrong, as a counter
    name (``missing`` or ``changed``) and a reason naming the file."""
    if data is None:
        return "missing", (
            f"evidence file {file.name} is not in the gateway's store (removed by retention?):"
            " cannot upload it"
        )
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != file.size or digest != file.sha256:
        return "changed", (
            f"evidence file {file.name} is not the one recorded ({len(data)} bytes, sha256"
            f" {digest[:16]}…; recorded {file.size} bytes, {str(file.sha256)[:16]}…):"
            " not uploaded"
        )
    return None


def form_root(file: EvidenceFile, case_id: str | None) -> dict[str, Any]:
    """What an upload's form and query fields are taken from (``UPLOAD_SOURCES``)."""
    return {
        "sha256": file.sha256,
        "bytes": file.size,
        "content_type": file.content_type,
        "file_name": file.name,
        "case_id": case_id,
    }


def file_id_text(value: object) -> str | None:
    """A file id from a reply: text or an integer, short and printable; else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) <= MAX_FILE_ID_CHARS and _PRINTABLE.fullmatch(value):
        return value
    return None


def attachment_fields(attach: Attach, ids: list[str], links: list[str]) -> dict[str, Any]:
    """The body fields (target → value) that carry the files' ids and links."""
    fields: dict[str, Any] = {}
    for target, values in ((attach.ids, ids), (attach.links, links)):
        if target is not None and values:
            fields[target] = attach.join.join(values) if attach.join is not None else values
    return fields
