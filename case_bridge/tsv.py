"""Tab-separated data files of the case bridge (units, class policy, working calendar),
read with bounds and errors that name the file and the line.

A line starting with ``#`` is a comment; blank lines are skipped; the first other line is
the header and must match the columns the table expects, so a shifted file is refused
rather than read with its columns mixed up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

MAX_FILE_BYTES = 1024 * 1024
MAX_ROWS = 20_000
MAX_FIELD_CHARS = 200


class TableError(ValueError):
    """A data file refused; the message starts with ``<file>:<line>:``."""


def rows(
    path: Path, columns: tuple[str, ...], optional: int = 0
) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each data row; the last ``optional`` columns may be
    missing (they come back as ``""``)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TableError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
        # utf-8-sig: Excel and WPS save "UTF-8" with a byte order mark, which is no field.
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 (byte {exc.start})") from None
    yield from parse(text, str(path), columns, optional)


def parse(
    text: str, source: str, columns: tuple[str, ...], optional: int = 0
) -> Iterator[tuple[int, list[str]]]:
    header_seen = False
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split("\t")]
        if not header_seen:
            if tuple(fields) != columns:
                want = "\\t".join(columns)
                raise TableError(f"{source}:{number}: header is not {want!r}")
            header_seen = True
            continue
        if not len(columns) - optional <= len(fields) <= len(columns):
            raise TableError(f"{source}:{number}: {len(fields)} fields, expected {len(columns)}")
        if any(len(field) > MAX_FIELD_CHARS for field in fields):
            raise TableError(f"{source}:{number}: a field is longer than {MAX_FIELD_CHARS}")
        count += 1
        if count > MAX_ROWS:
            raise TableError(f"{source}:{number}: more than {MAX_ROWS} rows")
        yield number, fields + [""] * (len(columns) - len(fields))
    if not header_seen:
        raise TableError(f"{source}: no header line ({chr(9).join(columns)!r})")
