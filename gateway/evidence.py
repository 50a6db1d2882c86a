"""Evidence pictures for video cases: JPEGs in the evidence folder, each with its content hash.

A case on a city platform is a record that may be disputed months later, so each picture it
points at carries the SHA-256 and size of its bytes: the platform, or an auditor holding a
copy, can check that the file is the one the gateway filed. The hash travels inside the
alert's media entry, as a URL fragment (``<url>#sha256=<hex>&bytes=<n>``, the convention
of pip's package links): ``Alert.media`` stays a tuple of strings, the fragment never
reaches a server, and ``case_bridge/case_model.py`` splits it into the case's evidence item.

The URL is a signed, expiring link (gateway/evidence_links.py) that platforms fetch without
the API token. A picture above ``max_picture_bytes`` is encoded again at lower quality; one
that still does not fit is left out of the case and counted by reason, never truncated.

A platform that takes uploads gets the file itself: the case bridge hands back the link it
was given and ``EvidenceWriter.read_linked`` returns the bytes, so the bridge never learns
where pictures are kept (it checks them against the recorded hash before sending).

The folder is ``evidence.dir``, by default "evidence" beside the store. Replicas of one city
share one (gateway/replica.py): the camera's replica writes, the desk's reads for uploads,
and any replica's evidence server serves the links (gateway/evidence_server.py), so a
case's pictures survive the replica that took them.

Sensor cases get the same treatment for an excerpt of the device's recent readings, a JSON
document (gateway/sensor_excerpts.py) written by ``save_file``: same folder, hash, links,
retention and uploads; ``media_type`` tells the serving routes which is which.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from domain import Alert
from gateway.evidence_links import SIGNED_PREFIX, EvidenceLinks
from gateway.evidence_settings import MAX_EVIDENCE_BYTES

JPEG_QUALITY = 85
# Tried in turn, best first, for a picture above the size limit.
SMALLER_QUALITIES = (70, 55, 40)
# How evidence files are named: pictures <alert key, "/" as "_">_<ts>[_before].jpg, and
# sensor excerpts (gateway/sensor_excerpts.py) <key>_<ts>_excerpt_<sha256, 16 hex>.json.
EVIDENCE_NAME = re.compile(
    r"(?!\.)[A-Za-z0-9_.-]{1,200}_\d{1,19}(?:(?:_before)?\.jpg|_excerpt_[0-9a-f]{16}\.json)"
)
# What each kind of evidence file is, by its name's ending: for the routes that serve them.
MEDIA_TYPES = {".jpg": "image/jpeg", ".json": "application/json"}


@dataclass
class EvidenceWriter:
    """Writes a video alert's pictures into ``folder`` and names them by signed link and
    hash; ``refused`` counts pictures left out, by reason (for the gateway's metrics)."""

    folder: Path
    links: EvidenceLinks
    max_picture_bytes: int
    refused: Counter[str] = field(default_factory=Counter)

    def save(
        self, alert: Alert, drawn: np.ndarray, before: np.ndarray | None, now_s: int
    ) -> tuple[str, ...]:
        """Write the annotated frame (and the "before" frame); return their media entries,
        the links signed at ``now_s``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = alert.key.replace("/", "_") + f"_{alert.ts}"
        pictures = {f"{stem}.jpg": drawn}
        if before is not None:
            pictures[f"{stem}_before.jpg"] = before
        media = []
        for name, image in pictures.items():
            data = self._encoded(image)
            if data is None:
                continue
            self._put(name, data)
            media.append(media_entry(self.links.url(name, now_s), data))
        return tuple(media)

    def _encoded(self, image: np.ndarray) -> bytes | None:
        """The JPEG at the usual quality, else the first lower quality within the limit."""
        for quality in (JPEG_QUALITY, *SMALLER_QUALITIES):
            ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                self.refused["not_encodable"] += 1
                return None
            if buffer.size <= self.max_picture_bytes:
                return buffer.tobytes()
        self.refused["too_large"] += 1
        return None

    def save_file(self, name: str, data: bytes, now_s: int) -> str:
        """Write ``data`` (a document already within its size limit) as ``name`` and return
        its media entry, the link signed at ``now_s``, written whole (``_put``).
        ``ValueError`` for a name ``read_evidence`` would not serve or bytes it would not
        read; ``OSError`` when the folder refuses the write (nothing is left behind)."""
        if not EVIDENCE_NAME.fullmatch(name) or len(data) > MAX_EVIDENCE_BYTES:
            raise ValueError("not an evidence file the gateway can serve")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._put(name, data)
        return media_entry(self.links.url(name, now_s), data)

    def _put(self, name: str, data: bytes) -> None:
        """Write ``data`` whole beside ``name``, then move it into place: whoever reads the
        folder (an upload, a replica serving a link) never sees part of a file."""
        # Random, not the pid alone: replicas sharing the folder may each be pid 1.
        draft = self.folder / f".{name}.{os.getpid()}.{secrets.token_hex(8)}.draft"
        try:
            draft.write_bytes(data)
            os.replace(draft, self.folder / name)
        finally:
            draft.unlink(missing_ok=True)

    def read_linked(self, url: str) -> bytes | None:
        """The bytes of the picture a media link of ours names (with or without the public
        address in front), or None. The link comes from our own outbox, so its signature
        and expiry are not checked (a command may wait past a link's lifetime);
        ``read_evidence`` keeps the name inside the folder."""
        _, prefix, name = urlsplit(url).path.rpartition(SIGNED_PREFIX)
        if not prefix or "/" in name:
            return None
        return read_evidence(self.folder, unquote(name))


def media_entry(url: str, data: bytes) -> str:
    """``url`` with the hash and size of ``data`` as its fragment."""
    return f"{url}#sha256={hashlib.sha256(data).hexdigest()}&bytes={len(data)}"


def media_type(name: str) -> str:
    """The content type of the evidence file ``name`` (one ``EVIDENCE_NAME`` matches)."""
    return MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")


def read_evidence(folder: Path, name: str) -> bytes | None:
    """The picture named ``name`` if it is a regular file directly in ``folder``: opened
    relative to the folder, without following a symlink, and refused if it has another
    hard link, so no name reaches a file outside the folder."""
    if not EVIDENCE_NAME.fullmatch(name):
        return None
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        return None
    finally:
        os.close(folder_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > MAX_EVIDENCE_BYTES:
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as file:  # its size, not the limit: read(n) allocates n first
        return file.read(info.st_size)
